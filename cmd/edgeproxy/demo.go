package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

// runDemoMachine runs "edgeproxy demo-machine": the demo backend of the quick start, which
// answers HTTP/1, h2c, WebSocket and raw TCP on one port. It runs until SIGINT or SIGTERM.
func runDemoMachine(args []string) error {
	fs := flag.NewFlagSet("demo-machine", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	id := fs.String("id", "demo", "machine id, reported in JSON and in the Demo-Machine-Id header")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, errc, err := demo.Listen(ctx, *listen, *id, log)
	if err != nil {
		return err
	}
	log.Info("demo machine listening", "addr", ln.Addr().String(), "machine_id", *id)
	if err := <-errc; err != nil {
		return err
	}
	log.Info("demo machine stopped", "machine_id", *id)
	return nil
}
