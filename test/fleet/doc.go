// Package fleet is the end-to-end suite of the fleet: it builds the real
// edgeproxy binary and a real NATS server (nats-server, built from the
// module edgeproxy embeds), runs three edges on loopback sharing one
// catalog, and measures what the fleet promises: apps applied with
// `edgeproxy fleet apply` served everywhere within a second, machine
// changes propagated to routing on every edge (p50 and p99), zero failed
// requests while NATS is down, an edge restarted during the outage serving
// from its cache, and garbage in every bucket refused record by record.
//
// Run it with "go test ./test/fleet/" (skipped under -short).
package fleet
