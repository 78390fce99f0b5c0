// Package pgtls is the PostgreSQL suite of the pg_tls handler: it builds the
// real edgeproxy binary, starts a real PostgreSQL server (initdb into a
// temporary directory, postgres on a free loopback port, SCRAM passwords),
// runs the proxy in front of it with a pg_tls port, and drives it with the
// real psql client: sslmode=require and verify-full succeed, sslmode=disable
// is refused, a multi-statement session, a 100,000-row result and a
// 100,000-row COPY upload come through whole, and ten clients at once each
// get their own session.
//
// The package has no code of its own; the suite lives in its _test.go files
// and runs with "go test ./test/pgtls/" (skipped under -short). It needs the
// PostgreSQL server and client (Debian's postgresql and postgresql-client,
// which .ci/run installs): without them it skips, or fails when the CI
// environment variable is set. Run as root, it starts the server as the
// postgres system user, since PostgreSQL refuses to run as root. Linux only.
package pgtls
