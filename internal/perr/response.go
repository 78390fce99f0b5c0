package perr

import (
	"net/http"
	"strconv"
)

// CodeHeader carries the error code on responses the proxy makes itself,
// so clients and tests need not parse the body.
const CodeHeader = "Edgeproxy-Error-Code"

// Line is the body of the proxy's own error response: "CODE: message" and
// a newline, the form users paste into searches. Causes are left out: they
// may hold addresses or bytes a client must not see.
func (e *Error) Line() string {
	return string(e.Code) + ": " + e.Msg + "\n"
}

// RawResponse is a complete HTTP/1.1 error response for code that closes
// the connection, for answering before net/http has the connection (a
// first request line that is not HTTP at all). Its Content-Length is
// counted from the body it carries, so the two cannot disagree. It is nil
// for codes without an HTTP status (TLS): the caller just closes.
func RawResponse(code Code) []byte {
	e := New(code, nil)
	status := e.HTTPStatus()
	if status == 0 {
		return nil
	}
	body := e.Line()
	b := make([]byte, 0, 192+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nServer: edgeproxy\r\n"...)
	b = append(b, CodeHeader+": "...)
	b = append(b, code...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}
