// Package deploy checks the operator files under deploy/ against the code
// and the docs they describe: the Prometheus alerting rules
// (deploy/prometheus) pass promtool's checks and unit tests and use only
// metrics and labels the proxy exports; the Grafana dashboard
// (deploy/grafana) is well-formed and uses only exported metrics; every
// alert has a runbook in docs/operations.md and every runbook an alert; and
// the systemd unit (deploy/systemd) gives the binary only flags it accepts.
//
// The package has no code of its own; the checks live in its _test.go
// files and run with "go test ./test/deploy". The promtool checks need
// promtool on PATH (Debian's prometheus package); without it they are
// skipped, unless the CI environment variable is set, when they fail.
package deploy
