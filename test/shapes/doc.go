// Package shapes is the regression suite of the connection shapes in
// docs/incident.md: it builds the real edgeproxy binary, runs it as a separate
// process in front of a demo machine, storms it with internal/storm (TLS
// close_notify followed by junk and then a hold, a FIN or a RST; FIN in the
// middle of a body; close_notify after a complete request; keep-alive as a
// control), holds thousands of slowloris connections open against it, and
// asserts what a correct proxy must show afterwards: idle CPU near zero, its
// descriptors back where they were, spurious-wakeup counters at zero, and
// every response delivered whole.
//
// The package has no code of its own; the suite lives in its _test.go files
// and runs with "go test ./test/shapes/" (skipped under -short). It runs on
// Linux only, since it reads the proxy's CPU, descriptors and sockets from
// /proc.
package shapes
