package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/server"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

func runProxy(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "edgeproxy.toml", "config file")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, notices, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Proxy.LogLevel)
	for _, n := range notices {
		log.Info("config note", "file", n.File, "line", n.Line, "key", n.Key, "note", n.Msg)
	}
	srv, err := server.New(cfg, server.Options{Log: log, Version: version})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("edgeproxy starting", "version", version, "config", *path, "region", cfg.Proxy.Region)
	return srv.Run(ctx)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by config
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// runValidate loads a config with the same code as run, including
// certificates, and prints every problem; exit status 1 if any.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edgeproxy.toml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, notices, err := config.Load(*path)
	if err == nil {
		_, err = server.BuildRuntime(cfg, nil, server.Deps{Log: slog.New(slog.DiscardHandler)})
	}
	for _, n := range notices {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	if err != nil {
		if ce, ok := err.(*config.Error); ok {
			for _, p := range ce.Problems {
				fmt.Fprintf(stdout, "error: %s\n", p)
			}
			fmt.Fprintf(stdout, "%s: %d problem(s)\n", *path, len(ce.Problems))
		} else {
			fmt.Fprintf(stdout, "error: %s: %v\n", *path, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d apps, %d public ports)\n", *path, len(cfg.Apps), countPorts(cfg))
	return 0
}

func countPorts(cfg *config.Config) int {
	seen := map[int]bool{}
	for i := range cfg.Apps {
		for _, s := range cfg.Apps[i].AllServices() {
			for _, p := range s.Ports {
				lo, hi := p.Range()
				for x := lo; x <= hi; x++ {
					seen[x] = true
				}
			}
		}
	}
	return len(seen)
}

func runGenCert(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gen-cert", flag.ContinueOnError)
	certOut := fs.String("cert", "cert.pem", "where to write the certificate (PEM)")
	keyOut := fs.String("key", "key.pem", "where to write the private key (PEM)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("name at least one hostname")
	}
	cert, key, err := tlsterm.WriteTestCert(filepath.Dir(*certOut), fs.Args()...)
	if err != nil {
		return err
	}
	if err := os.Rename(cert, *certOut); err != nil {
		return err
	}
	if err := os.Rename(key, *keyOut); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s for %v\n", *certOut, *keyOut, fs.Args())
	return nil
}
