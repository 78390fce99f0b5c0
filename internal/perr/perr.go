// Package perr owns edgeproxy's user-visible proxy errors: the stable codes
// (PR01, PC01, ...), the message and hint each code shows, where the fault came
// from (client, upstream, internal), whether retrying on another machine is
// safe, and the HTTP status the error maps to.
//
// Retry loops, log fields, metric labels and error pages read those fields from
// an *Error rather than matching strings, so a code's meaning is decided once,
// in the registry in codes.go. docs/errors.md is generated from that registry
// (go test ./internal/perr -update) and a test keeps the two identical.
package perr

import (
	"errors"
	"net/http"
	"strconv"
)

// Source says whose behaviour caused an error. Its zero value is
// SourceInternal so that an error nobody classified is blamed on the proxy
// rather than silently on a client or an app.
type Source uint8

const (
	// SourceInternal: the proxy itself decided to refuse (routing, limits) or
	// failed (a bug).
	SourceInternal Source = iota
	// SourceClient: the client sent something the proxy cannot serve.
	SourceClient
	// SourceUpstream: a machine (instance) failed, misbehaved or was unreachable.
	SourceUpstream
)

// String returns the label used in logs and metrics.
func (s Source) String() string {
	switch s {
	case SourceInternal:
		return "internal"
	case SourceClient:
		return "client"
	case SourceUpstream:
		return "upstream"
	default:
		return "Source(" + strconv.Itoa(int(s)) + ")"
	}
}

// Code is a stable error code such as "PR01". Codes never change meaning once
// published: users search for them.
type Code string

// Error is a proxy error carrying its code and classification. Err is the
// underlying cause (a dial error, a timeout, ...) and may be nil.
type Error struct {
	Code      Code
	Source    Source
	Retryable bool
	Msg       string
	Err       error
}

// New classifies err under code, filling Msg, Source and Retryable from the
// registry. An unregistered code does not panic, because New runs on the data
// path; it becomes an internal, non-retryable error whose message names the
// bad code, and a test in this package keeps every exported Code registered.
func New(code Code, err error) *Error {
	info, ok := lookup(code)
	if !ok {
		return &Error{Code: code, Source: SourceInternal, Msg: "unregistered error code", Err: err}
	}
	return &Error{Code: code, Source: info.Source, Retryable: info.Retryable, Msg: info.Msg, Err: err}
}

// Error renders "CODE: message: cause", the form users paste into searches.
func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes the cause so errors.Is(err, context.DeadlineExceeded) and
// friends keep working through a classified error.
func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status to answer with. It is 0 for codes that arise where
// no HTTP response can be sent (TLS handshake failures): the caller closes the
// connection instead. An unregistered code maps to 500.
func (e *Error) HTTPStatus() int {
	info, ok := lookup(e.Code)
	if !ok {
		return http.StatusInternalServerError
	}
	return info.Status
}

// As finds the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}
