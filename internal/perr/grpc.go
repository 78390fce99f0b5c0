package perr

// gRPC status codes (google.golang.org/grpc/codes) that the proxy's own
// errors map to. gRPC clients read the outcome of a call from grpc-status,
// not from the HTTP status, and treat a text/plain answer as a broken
// transport.
const (
	GRPCResourceExhausted = 8
	GRPCInternal          = 13
	GRPCUnavailable       = 14
)

// GRPCStatus is the gRPC status a gRPC client gets for code. Unavailable
// is what gRPC clients retry, so it is kept to failures before any request
// byte reached an app (no machine, a refused or failed connect), where a
// retry cannot run the call twice; limits are ResourceExhausted; anything
// else is Internal.
func GRPCStatus(code Code) int {
	switch code {
	case NoHealthyInstances, NoCandidate, NoCandidateTimeout,
		InstanceRefused, ConnectTimeout, ConnectFailed, MachineUnreachable:
		return GRPCUnavailable
	case AppConnLimit, QueueTimeout:
		return GRPCResourceExhausted
	}
	return GRPCInternal
}
