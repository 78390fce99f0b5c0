// Package security is the regression suite of what hostile traffic found:
// it builds the real edgeproxy binary, runs it in front of a recording
// machine (a listener that logs the exact bytes it receives and answers
// with crafted bytes), and drives it with raw sockets and real clients.
// Each test here failed against the proxy before the fix it guards.
//
// The package has no code of its own; run it with "go test ./test/security/"
// (skipped under -short). Linux only: it reads the proxy's CPU and sockets
// from /proc.
package security
