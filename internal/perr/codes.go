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
//	H client HTTP protocol             B backhaul (edge to worker)
//
// A backhaul code's source is upstream: to the client, the worker is on
// the machine's side; the code itself names the hop.
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
	PlainHTTPOnTLSPort     Code = "PH05"
	InvalidMethod          Code = "PH06"
	ConnectUnsupported     Code = "PH07"
	NoHealthyInstances     Code = "PR01"
	NoCandidate            Code = "PR03"
	NoCandidateTimeout     Code = "PR04"
	UnknownHost            Code = "PR05"
	MisdirectedRequest     Code = "PR06"
	InstanceRefused        Code = "PC01"
	ConnectTimeout         Code = "PC02"
	InstanceClosed         Code = "PC03"
	ConnectFailed          Code = "PC04"
	MachineStartFailed     Code = "PM01"
	MachineStartTimeout    Code = "PM02"
	MachineDriverFailed    Code = "PM03"
	MachineUnreachable     Code = "PM05"
	ResponseTimeout        Code = "PU01"
	MalformedResponse      Code = "PU02"
	BodyReadFailed         Code = "PU05"
	TLSHandshakeFailed     Code = "PT01"
	NoCertificate          Code = "PT05"
	CertificateNotIssued   Code = "PT08"
	AppConnLimit           Code = "PL01"
	QueueTimeout           Code = "PL02"
	ReplayBodyTooLarge     Code = "PA01"
	TooManyReplays         Code = "PA02"
	RequestLineTooLong     Code = "PH08"
	RequestBodyTooSlow     Code = "PH09"
	ClientNotReading       Code = "PH10"
	HTTP2Flood             Code = "PH11"
	ExpectationFailed      Code = "PH12"
	WorkerUnreachable      Code = "PB01"
	WorkerRefused          Code = "PB02"
	BackhaulProtocol       Code = "PB03"
	BackhaulBroken         Code = "PB04"
	NotFleetMember         Code = "PB05"
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
		Hint: "the client sent bytes that are not valid HTTP/1.1 or HTTP/2 on an http port; bytes that are not HTTP at all (neither an HTTP/1 request line nor the HTTP/2 preface, such as TLS or a broken preface) are closed without a response",
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
	PlainHTTPOnTLSPort: {
		// nginx answers the same mistake with "The plain HTTP request was
		// sent to HTTPS port", which is what users will search for.
		Source: SourceClient, Status: http.StatusBadRequest,
		Msg:  "plain HTTP request sent to a TLS port",
		Hint: "the client sent HTTP without TLS to a port that terminates TLS (such as 443): use https:// for this port, or http:// on the app's plain http port",
	},
	InvalidMethod: {
		Source: SourceClient, Status: http.StatusBadRequest,
		Msg:  "invalid request method",
		Hint: "the method is not an HTTP token (RFC 9110): it has a space, a control character or a separator in it",
	},
	ConnectUnsupported: {
		// The request is well formed; the proxy just does not offer
		// tunnels, so it is refused as a method, not as malformed.
		Source: SourceClient, Status: http.StatusMethodNotAllowed,
		Msg:  "CONNECT is not supported",
		Hint: "edgeproxy forwards requests to apps and opens no tunnels: CONNECT (a forward-proxy request, or HTTP/2 extended CONNECT) is refused",
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
		Hint: "no app has a certificate or route for the requested hostname; check DNS and the app's hostnames. Over TLS the handshake is refused with alert 112 (unrecognized_name)",
	},
	MisdirectedRequest: {
		Source: SourceClient, Status: http.StatusMisdirectedRequest,
		Msg:  "request misdirected: its host belongs to another app than the TLS connection's",
		Hint: "the TLS handshake was made for another app's name (SNI), with that app's certificate and tls_options; open a new connection for this host. Clients that reuse connections across names (HTTP/2) do so on a 421",
	},
	WorkerUnreachable: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusBadGateway,
		Msg:  "failed to reach the worker that runs the machine",
		Hint: "the machine runs on another node, and the backhaul connection to that node failed (refused, timed out, or its certificate was not the fleet's); the machine itself was not tried. Check the worker is up, its backhaul_listen address is reachable from this edge, and both nodes' certificates come from the same fleet CA",
	},
	WorkerRefused: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusBadGateway,
		Msg:  "the worker refused to connect to the machine",
		Hint: "the worker does not run that machine (the edge's catalog is older than the worker's), or the app has no service on that port there; the worker connected nowhere. Another machine is tried",
	},
	BackhaulProtocol: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "malformed backhaul message",
		Hint: "an edge and a worker disagree on the backhaul protocol: are they running compatible edgeproxy versions?",
	},
	BackhaulBroken: {
		Source: SourceUpstream, Status: http.StatusBadGateway,
		Msg:  "backhaul connection to the worker broke during the request",
		Hint: "the connection between this edge and the machine's worker ended after the request was sent (worker restarted or unreachable); the machine may have seen the request",
	},
	NotFleetMember: {
		Source: SourceClient,
		Msg:    "backhaul client is not a fleet member",
		Hint:   "a connection to backhaul_listen came without a certificate signed by the fleet CA, or one that names no node; it was refused in the TLS handshake and nothing was connected",
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
	MachineStartFailed: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusServiceUnavailable,
		Msg:  "machine failed to start",
		Hint: "the app's machines were stopped and the one chosen could not be started (the logged error says why: its command, the driver's answer); the next request tries another machine",
	},
	MachineStartTimeout: {
		Source: SourceUpstream, Retryable: true, Status: http.StatusServiceUnavailable,
		Msg:  "timed out waiting for machine to start",
		Hint: "a stopped machine was started for this request but did not accept connections (or pass its checks) within the app's start_timeout; raise start_timeout for apps that boot slowly",
	},
	MachineDriverFailed: {
		Source: SourceInternal, Status: http.StatusServiceUnavailable,
		Msg:  "machine driver failed",
		Hint: "edgeproxy could not ask the machine driver to act (the Machines API unreachable or refusing, a worker not answering); the logged error names the driver and its answer",
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
		Hint:   "the client offered no common TLS version, cipher or ALPN protocol, sent a malformed or oversized ClientHello (alerts 50 and 80), opened TLS at once on a pg_tls port without ALPN postgresql (alert 120), or stalled during the handshake",
	},
	NoCertificate: {
		Source: SourceClient,
		Msg:    "no valid tls certificate was found for SNI",
		Hint:   "add a certificate for this hostname, or set tls_options.default_self_signed; the handshake is refused with alert 112 (unrecognized_name)",
	},
	CertificateNotIssued: {
		Source: SourceInternal,
		Msg:    "acme certificate not obtained or renewed",
		Hint:   "the log line carries the CA's problem type and detail: usually a challenge the CA could not complete (DNS not pointing at this proxy, ports 80 and 443 not reaching it) or a rate limit; edgeproxy retries with backoff, and a certificate already in hand keeps serving until it expires",
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
	}, RequestLineTooLong: {
		Source: SourceClient, Status: http.StatusRequestURITooLong,
		Msg:  "request line too long",
		Hint: "the method, target and version exceed 8 KiB; long query strings belong in a request body",
	},
	RequestBodyTooSlow: {
		Source: SourceClient, Status: http.StatusRequestTimeout,
		Msg:  "client sent the request body too slowly",
		Hint: "the body did not move at least body_min_bytes within body_timeout ([proxy]); a client trickling its body would otherwise hold a machine connection without end",
	},
	ClientNotReading: {
		// No response can be written, the client is not reading; 499 is
		// what logs and metrics show, as for a client that left.
		Source: SourceClient, Status: 499,
		Msg:  "client stopped reading the response",
		Hint: "the response did not move at least body_min_bytes to the client within body_timeout ([proxy]): a client with a closed flow-control window or a full receive buffer; the machine connection was released",
	},
	ExpectationFailed: {
		Source: SourceClient, Status: http.StatusExpectationFailed,
		Msg:  "unsupported Expect in request",
		Hint: "the request's Expect field asks for something other than 100-continue, the only expectation HTTP defines; send it without Expect, or with Expect: 100-continue",
	},
	HTTP2Flood: {
		Source: SourceClient, Status: 0,
		Msg:  "HTTP/2 flood: connection closed with ENHANCE_YOUR_CALM",
		Hint: "the client sent more RST_STREAM, SETTINGS or PING frames per second than [proxy] h2_max_resets_per_second, h2_max_settings_per_second or h2_max_pings_per_second allow (rapid reset and control-frame floods)",
	},
}

// Lookup is the registered code spelled s, for codes that crossed the
// wire (a worker's answer to an edge).
func Lookup(s string) (Code, bool) {
	_, ok := registry[Code(s)]
	return Code(s), ok
}

// HintOf is what to check for a code, for the log line that reports it:
// operators get the hint, while the client's response stays terse. "" for
// an unregistered code.
func HintOf(code Code) string {
	return registry[code].Hint
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
