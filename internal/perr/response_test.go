package perr

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// TestRawResponseFraming: every code's raw response parses as one HTTP
// response whose declared length is exactly the body that follows.
func TestRawResponseFraming(t *testing.T) {
	for _, info := range Codes() {
		raw := RawResponse(info.Code)
		if info.Status == 0 {
			if raw != nil {
				t.Errorf("%s has no HTTP status but a raw response", info.Code)
			}
			continue
		}
		br := bufio.NewReader(bytes.NewReader(raw))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v: %q", info.Code, err, raw)
		}
		body, _ := io.ReadAll(resp.Body)
		rest, _ := io.ReadAll(br)
		want := New(info.Code, nil).Line()
		if resp.StatusCode != info.Status || string(body) != want || len(rest) != 0 ||
			resp.Header.Get(CodeHeader) != string(info.Code) || !resp.Close {
			t.Errorf("%s: status %d body %q then %q, code %q, close %v; want %d %q, nothing after, closing",
				info.Code, resp.StatusCode, body, rest, resp.Header.Get(CodeHeader), resp.Close, info.Status, want)
		}
	}
}

func TestGRPCStatus(t *testing.T) {
	for code, want := range map[Code]int{
		InstanceRefused: GRPCUnavailable, MachineUnreachable: GRPCUnavailable, NoHealthyInstances: GRPCUnavailable,
		AppConnLimit: GRPCResourceExhausted, QueueTimeout: GRPCResourceExhausted,
		// The app may have acted on the call: a client must not retry it
		// as it would an Unavailable.
		InstanceClosed: GRPCInternal, ResponseTimeout: GRPCInternal, InternalError: GRPCInternal,
	} {
		if got := GRPCStatus(code); got != want {
			t.Errorf("GRPCStatus(%s) = %d, want %d", code, got, want)
		}
	}
}
