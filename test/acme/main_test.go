//go:build linux

// Package acme_test runs edgeproxy against pebble, Let's Encrypt's test
// ACME server, on loopback: pebble validates the challenges against the
// real binary's ports, resolving the apps' names through a DNS server the
// test runs, and the certificates it issues are checked with curl.
package acme_test

import (
	"context"
	"os"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

var (
	bin       proctest.Bin
	pebbleBin string
	pebbleErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// pebble is a tool of this module (go.mod's tool block): the version
	// the suite was written against, nothing to install.
	path, cleanup, err := proctest.BuildProgram(context.Background(), "github.com/letsencrypt/pebble/v2/cmd/pebble", "pebble")
	defer cleanup()
	pebbleBin, pebbleErr = path, err
	return bin.Main(m, "acme", true)
}
