package perr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestNewFillsFromRegistry(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:8080: connect: connection refused")
	e := New(InstanceRefused, cause)

	if e.Code != "PC01" || e.Source != SourceUpstream || !e.Retryable {
		t.Fatalf("New(PC01) = %+v, want upstream retryable PC01", e)
	}
	if e.HTTPStatus() != http.StatusBadGateway {
		t.Errorf("HTTPStatus = %d, want 502", e.HTTPStatus())
	}
	want := "PC01: instance refused connection: dial tcp 10.0.0.1:8080: connect: connection refused"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
}

func TestErrorWithoutCause(t *testing.T) {
	got := New(NoHealthyInstances, nil).Error()
	if want := "PR01: no known healthy instances found for route"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestUnwrapAndAs(t *testing.T) {
	wrapped := fmt.Errorf("proxying request: %w", New(ResponseTimeout, context.DeadlineExceeded))

	if !errors.Is(wrapped, context.DeadlineExceeded) {
		t.Error("errors.Is does not see the cause through *Error")
	}
	e, ok := As(wrapped)
	if !ok || e.Code != ResponseTimeout {
		t.Fatalf("As = %v, %v; want PU01", e, ok)
	}
	if e.HTTPStatus() != http.StatusGatewayTimeout {
		t.Errorf("HTTPStatus = %d, want 504", e.HTTPStatus())
	}
	if _, ok := As(errors.New("plain")); ok {
		t.Error("As found an *Error in a plain error")
	}
	if _, ok := As(nil); ok {
		t.Error("As found an *Error in nil")
	}
}

func TestUnregisteredCode(t *testing.T) {
	e := New("PZ99", nil)
	if e.Source != SourceInternal || e.Retryable || e.HTTPStatus() != http.StatusInternalServerError {
		t.Errorf("unregistered code = %+v status %d, want internal, not retryable, 500", e, e.HTTPStatus())
	}
	if !strings.HasPrefix(e.Error(), "PZ99: ") {
		t.Errorf("Error() = %q, want the code kept", e.Error())
	}
}

func TestSourceString(t *testing.T) {
	for s, want := range map[Source]string{
		SourceClient: "client", SourceUpstream: "upstream", SourceInternal: "internal", 9: "Source(9)",
	} {
		if s.String() != want {
			t.Errorf("Source(%d).String() = %q, want %q", s, s.String(), want)
		}
	}
	var zero Error
	if zero.Source != SourceInternal {
		t.Error("zero Source is not internal: unclassified errors would blame someone else")
	}
}

// TestExportedCodesRegistered guards New's no-panic fallback: every constant
// callers can name must have a registry entry.
func TestExportedCodesRegistered(t *testing.T) {
	exported := []Code{
		InternalError, MalformedRequest, RequestHeadersTooLarge, ClientClosed, RequestBodyIncomplete, PlainHTTPOnTLSPort,
		InvalidMethod, ConnectUnsupported,
		NoHealthyInstances, NoCandidate, NoCandidateTimeout, UnknownHost, MisdirectedRequest,
		InstanceRefused, ConnectTimeout, InstanceClosed, ConnectFailed, MachineUnreachable,
		MachineStartFailed, MachineStartTimeout, MachineDriverFailed,
		ResponseTimeout, MalformedResponse, BodyReadFailed,
		TLSHandshakeFailed, NoCertificate, CertificateNotIssued, AppConnLimit, QueueTimeout,
		ReplayBodyTooLarge, TooManyReplays, RequestLineTooLong, RequestBodyTooSlow, ClientNotReading, HTTP2Flood, ExpectationFailed,
		WorkerUnreachable, WorkerRefused, BackhaulProtocol, BackhaulBroken, NotFleetMember,
	}
	for _, c := range exported {
		if _, ok := lookup(c); !ok {
			t.Errorf("%s is exported but not registered", c)
		}
	}
	if len(exported) != len(Codes()) {
		t.Errorf("%d exported codes, %d registered: keep the list above in step", len(exported), len(Codes()))
	}
}

var codeShape = regexp.MustCompile(`^P[PUCTMARLHB][0-9]{2}$`)

func TestRegistryConsistent(t *testing.T) {
	infos := Codes()
	for i, info := range infos {
		if !codeShape.MatchString(string(info.Code)) {
			t.Errorf("%s: not P + category letter + two digits", info.Code)
		}
		if i > 0 && infos[i-1].Code >= info.Code {
			t.Errorf("Codes() not sorted at %s", info.Code)
		}
		if info.Msg == "" || info.Hint == "" {
			t.Errorf("%s: message and hint are both required", info.Code)
		}
		if info.Status != 0 && http.StatusText(info.Status) == "" && info.Status != 499 {
			t.Errorf("%s: status %d is not a known HTTP status", info.Code, info.Status)
		}
		// Only TLS codes, an HTTP/2 connection ended by GOAWAY and a
		// backhaul handshake refused happen where no response can be
		// written.
		if (info.Status == 0) != (info.Code[1] == 'T' || info.Code == HTTP2Flood || info.Code == NotFleetMember) {
			t.Errorf("%s: status %d; only TLS and connection-level codes may lack an HTTP status", info.Code, info.Status)
		}
		if info.Retryable && info.Source != SourceUpstream {
			t.Errorf("%s: retryable but not upstream; only a failing machine makes trying another one useful", info.Code)
		}
	}
}

// The reference platform's messages are what users paste into searches, so
// their wording must survive refactors.
func TestReferenceMessages(t *testing.T) {
	for code, msg := range map[Code]string{
		"PR01": "no known healthy instances found for route",
		"PC01": "instance refused connection",
		"PA01": "cannot retry/replay request because the body was read past what we are willing to buffer",
		"PT05": "no valid tls certificate was found for SNI",
		"PU05": "could not finish reading HTTP body from instance",
	} {
		if got := New(code, nil).Msg; got != msg {
			t.Errorf("%s message = %q, want %q", code, got, msg)
		}
	}
	for code, prefix := range map[Code]string{
		"PR03": "could not find a good candidate within",
		"PR04": "could not find a good candidate within",
		"PM05": "failed to connect to machine: gave up after",
	} {
		if got := New(code, nil).Msg; !strings.HasPrefix(got, prefix) {
			t.Errorf("%s message = %q, want prefix %q", code, got, prefix)
		}
	}
}
