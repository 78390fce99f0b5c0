package perr

import (
	"cmp"
	"net/http"
	"slices"
)

// Codes follow the platform's published scheme: "P", then a category letter,
// then two digits. Categories by second letter:
//
//	P internal   U upstream response   C upstream connection   T TLS
//	M machine    A app / replay        R routing               L limit
//	H client HTTP protocol
//
// Numbers the reference platform publishes (PR01, PC01, PM05, PA01, PT05,
// PU05, ...) keep its meaning and message wording so that users who search a
// code or a message find the same thing. Gaps in the numbering are left for
// codes the reference has and edgeproxy does not yet produce.
//
// Counts that vary per request ("within N attempts") are not part of the
// message; the caller puts them in the wrapped error, so the message stays a
// stable string for logs, docs and searches.
const (
	InternalError          Code = "PP01"
	MalformedRequest       Code = "PH01"
	RequestHeadersTooLarge Code = "PH02"
	ClientClosed           Code = "PH03"
	RequestBodyIncomplete  Code = "PH04"
	NoHealthyInstances     Code = "PR01"
	NoCandidate            Code = "PR03"
	NoCandidateTimeout     Code = "PR04"
	UnknownHost            Code = "PR05"
	InstanceRefused        Code = "PC01"
	ConnectTimeout         Code = "PC02"
	InstanceClosed         Code = "PC03"
	ConnectFailed          Code = "PC04"
	MachineUnreachable     Code = "PM05"
	ResponseTimeout        Code = "PU01"
	MalformedResponse      Code = "PU02"
	BodyReadFailed         Code = "PU05"
	TLSHandshakeFailed     Code = "PT01"
	NoCertificate          Code = "PT05"
	AppConnLimit           Code = "PL01"
	QueueTimeout           Code = "PL02"
	ReplayBodyTooLarge     Code = "PA01"
	TooManyReplays         Code = "PA02"
)

// Info describes one registered code. Status 0 means the error happens where
// no HTTP response can be written (see Error.HTTPStatus).
type Info struct {
	Code      Code
	Source    Source
	Retryable bool
	Status    int
	Msg       string
	Hint      string
}

// registry is constant data: written only by this literal, read by lookup and
// Codes. Retryable means the request can be sent to another machine without
// risk of it being processed twice, so it is true only for failures that
// happen before any request byte reached an app.
var registry = map[Code]Info{
	InternalError: {
		Source: SourceInternal, Status: http.StatusInternalServerError,
		Msg:  "internal proxy error",
		Hint: "a bug in edgeproxy; report it with the request id and the log line",
	},
	MalformedRequest: {
		Source: SourceClient, Status: http.StatusBadRequest,
		Msg:  "malformed HTTP request from client",
		Hint: "the client sent bytes that are not valid HTTP/1.1 or HTTP/2 on an http port",
	},
	RequestHeadersTooLarge: {
		Source: SourceClient, Status: http.StatusRequestHeaderFieldsTooLarge,
		Msg:  "request headers too large",
		Hint: "the request line and headers exceed the proxy's header size limit",
	},
	ClientClosed: {
		// 499 is nginx's convention; access logs and dashboards already know it.
		Source: SourceClient, Status: 499,
		Msg:  "client closed the connection before the response was sent",
		Hint: "the client gave up (timeout, navigation, cancelled call); not an app failure",
	},
	RequestBodyIncomplete: {
		Source: SourceClient, Status: http.StatusBadRequest,
		Msg:  "client ended the request body early",
		Hint: "the client closed or half-closed its connection before sending the whole body it announced",
	},
	NoHealthyInstances: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "no known healthy instances found for route",
		Hint: "every machine of the app is stopped, cordoned or failing its health checks; check machine state and tcp_checks/http_checks",
	},
	NoCandidate: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "could not find a good candidate within the allowed attempts at load balancing",
		Hint: "every machine tried was at its hard_limit or failed; the logged error gives the number of attempts. Add machines or raise hard_limit",
	},
	NoCandidateTimeout: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "could not find a good candidate within the allowed attempts at load balancing: attempts timed out",
		Hint: "machines were tried but reaching or starting them took too long; check machine start time and health",
	},
	UnknownHost: {
		Source: SourceClient, Status: http.StatusNotFound,
		Msg:  "no app serves this host",
		Hint: "no app has a certificate or route for the requested hostname; check DNS and the app's hostnames",
	},
	InstanceRefused: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusBadGateway,
		Msg:  "instance refused connection",
		Hint: "is the app listening on 0.0.0.0:PORT, not 127.0.0.1? PORT is the service's internal_port",
	},
	ConnectTimeout: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusBadGateway,
		Msg:  "timed out connecting to instance",
		Hint: "the machine did not complete the TCP handshake in time; it may be overloaded, paused or unreachable",
	},
	InstanceClosed: {
		// Not retryable: the app may already have acted on the request.
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "connection closed by instance before response",
		Hint: "the app closed or reset the connection while handling the request; check its logs for crashes or its own timeouts",
	},
	ConnectFailed: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusBadGateway,
		Msg:  "failed to connect to instance",
		Hint: "the machine's address could not be reached (no route, network down); the wrapped error names the system error",
	},
	MachineUnreachable: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "failed to connect to machine: gave up after the allowed attempts",
		Hint: "the machine could not be reached after several tries (the logged error gives the count and the last failure); check it is started and listening",
	},
	ResponseTimeout: {
		Source: SourceUpstream, Status: http.StatusGatewayTimeout,
		Msg:  "timed out waiting for response from instance",
		Hint: "the app accepted the request but sent no response headers in time",
	},
	MalformedResponse: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "malformed HTTP response from instance",
		Hint: "the app sent bytes that are not valid HTTP; does internal_port speak HTTP (or h2c with h2_backend)?",
	},
	BodyReadFailed: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "could not finish reading HTTP body from instance",
		Hint: "the app closed the connection mid-response or sent less than its Content-Length",
	},
	TLSHandshakeFailed: {
		Source: SourceClient,
		Msg:    "TLS handshake with client failed or timed out",
		Hint:   "the client offered no common TLS version, cipher or ALPN protocol, or stalled during the handshake",
	},
	NoCertificate: {
		Source: SourceClient,
		Msg:    "no valid tls certificate was found for SNI",
		Hint:   "add a certificate for this hostname, or set tls_options.default_self_signed",
	},
	AppConnLimit: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "app connection limit reached",
		Hint: "this edge caps concurrent connections per app; the app is receiving more than that",
	},
	QueueTimeout: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "all machines at hard limit, timed out waiting in queue",
		Hint: "every machine stayed at hard_limit while the request waited; add machines or raise hard_limit",
	},
	ReplayBodyTooLarge: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "cannot retry/replay request because the body was read past what we are willing to buffer",
		Hint: "requests with bodies over 1 MB cannot be replayed with fly-replay; replay before reading the body, or send such requests to the right machine directly",
	},
	TooManyReplays: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "too many replays",
		Hint: "a request was replayed more than 10 times; check that replay targets do not replay it back",
	},
}

func lookup(code Code) (Info, bool) {
	info, ok := registry[code]
	info.Code = code
	return info, ok
}

// Codes returns the registry sorted by code. The slice is a fresh copy, so
// callers may keep or modify it.
func Codes() []Info {
	out := make([]Info, 0, len(registry))
	for code := range registry {
		info, _ := lookup(code)
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(a.Code, b.Code) })
	return out
}
