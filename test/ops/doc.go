// Package ops is the operations suite: it builds the real edgeproxy binary,
// runs it as an operator would (with a pid file, behind tableflip), keeps
// steady HTTP/1.1, HTTP/2 and raw TCP load on it, and meanwhile reloads its
// config (SIGHUP and the admin API, valid and invalid files) and hands it
// over to new processes (edgeproxy upgrade). It asserts that no request
// fails, no connection is reset, every echoed byte comes back intact, and
// each route change takes effect.
//
// The package has no code of its own; the suite lives in its _test.go files
// and runs with "go test ./test/ops/" (skipped under -short). It runs on
// Linux only: upgraded proxies are re-parented, so a small supervisor (the
// test binary itself, made a child subreaper with prctl) reaps them and kills
// them all if the test dies.
package ops
