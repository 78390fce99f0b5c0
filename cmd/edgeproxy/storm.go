package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/storm"
)

// runStorm is `edgeproxy storm`: it turns flags into a storm.Config, runs
// the storm with progress on stderr, and prints the report on stdout. An
// interrupt stops the storm early and still prints what it saw.
func runStorm(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: edgeproxy storm -target HOST:PORT [-sni NAME] [flags]

Opens -count connections of the shapes behind the close_notify incident
(see docs/incident.md) against a loopback target and reports outcomes, latencies,
and with -pid or -metrics the target's CPU, fds and spin counters.

shapes: cn-junk-hold, cn-junk-fin, cn-junk-rst, fin-mid-body, complete-cn,
keepalive; -shapes takes "all" or a list such as cn-junk-hold=3,keepalive=1

flags:
`)
		fs.PrintDefaults()
	}
	var (
		cfg     storm.Config
		shapes  string
		asJSON  bool
		quiet   bool
		metrics string
	)
	fs.StringVar(&cfg.Target, "target", "", "`HOST:PORT` to storm (loopback unless -allow-remote)")
	fs.StringVar(&cfg.SNI, "sni", "", "TLS server name and Host header (default: the target's host)")
	fs.BoolVar(&cfg.Plain, "plain", false, "plain HTTP, no TLS: close_notify becomes a FIN and no junk is sent")
	fs.IntVar(&cfg.Count, "count", 1000, "total connections")
	fs.IntVar(&cfg.Concurrency, "concurrency", 100, "connections in flight at once")
	fs.DurationVar(&cfg.Duration, "duration", 60*time.Second, "start no connection after this much time")
	fs.StringVar(&shapes, "shapes", "all", "shapes to make, with optional weights")
	fs.StringVar(&cfg.Path, "path", "/", "request path")
	fs.DurationVar(&cfg.Hold, "hold", 2*time.Second, "how long cn-junk-hold holds its connection")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "bound on each connection")
	fs.IntVar(&cfg.RequestsPerConn, "requests-per-conn", 10, "requests per keepalive connection")
	fs.IntVar(&cfg.BodySize, "body-size", 4096, "Content-Length announced by fin-mid-body, which sends half")
	fs.IntVar(&cfg.PID, "pid", 0, "target's `PID`, for its CPU time and open fds from /proc")
	fs.StringVar(&metrics, "metrics", "", "target's Prometheus metrics `URL`, for counter deltas")
	fs.DurationVar(&cfg.Idle, "idle", 3*time.Second, "idle window after the storm in which the target's CPU is measured (with -pid or -metrics)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow targets that are not loopback")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&quiet, "q", false, "no progress output")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgeproxy storm: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return usageError{errors.New("unexpected argument")}
	}
	ws, err := storm.ParseShapes(shapes)
	if err != nil {
		return err
	}
	cfg.Shapes, cfg.MetricsURL = ws, metrics
	// A storm against a port nobody listens on would report a thousand
	// refusals as if they were results: say so once instead. Only a
	// target the storm may hit is probed (storm.Run refuses the rest).
	if host, _, err := net.SplitHostPort(cfg.Target); err == nil {
		ip := net.ParseIP(host)
		if cfg.AllowRemote || host == "localhost" || (ip != nil && ip.IsLoopback()) {
			probe, err := net.DialTimeout("tcp", cfg.Target, 2*time.Second)
			if err != nil {
				return fmt.Errorf("nothing answers at %s: %v", cfg.Target, err)
			}
			probe.Close()
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var progress io.Writer
	if !quiet {
		progress = stderr
	}
	rep, err := storm.Run(ctx, cfg, progress)
	if rep == nil {
		return err
	}
	// An interrupted storm still prints what it saw, then fails.
	var perr error
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		perr = enc.Encode(rep)
	} else {
		perr = rep.WriteText(stdout)
	}
	return errors.Join(err, perr)
}
