package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/server"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

func runProxy(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "edgeproxy.toml", "config file")
	pidFile := fs.String("pid-file", "", "write the serving process's pid here (for edgeproxy upgrade)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if err := configArg(fs, path); err != nil {
		return err
	}
	cfg, notices, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Proxy.LogLevel)
	for _, n := range notices {
		log.Info("config note", "file", n.File, "line", n.Line, "key", n.Key, "note", n.Msg)
	}
	// tableflip hands the listening sockets to a new process on upgrade,
	// so a restart refuses no connection.
	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile, UpgradeTimeout: cfg.Proxy.DrainTimeout.D() + 30*time.Second})
	if err != nil {
		return err
	}
	defer upg.Stop()
	srv, err := server.New(cfg, server.Options{Log: log, Version: version, Listen: upg.Listen, ListenPacket: upg.ListenPacket,
		TicketKeys: inheritedTicketKeys(upg, log)})
	if err != nil {
		return err
	}
	log.Info("edgeproxy starting", "version", version, "config", *path, "region", cfg.Proxy.Region, "pid", os.Getpid())
	// Signals are caught before the ports open: a SIGTERM that arrives
	// once "listening" is logged must drain, not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := srv.Start(); err != nil {
		return err
	}
	// Only now, serving, does this process tell a parent it may go.
	if err := upg.Ready(); err != nil {
		srv.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Proxy.WatchConfig {
		go srv.WatchConfig(ctx, *path)
	}
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				log.Info("SIGHUP: reloading", "config", *path)
				_ = srv.Reload(*path)
			case syscall.SIGUSR2:
				log.Info("SIGUSR2: starting a new process to take over")
				go func() {
					rejoin := srv.PrepareHandover()
					if err := handOverTicketKeys(upg, srv.TicketKeys()); err != nil {
						log.Warn("session ticket keys not handed over: clients resume no session at the new process", "error", err.Error())
					}
					if err := upg.Upgrade(); err != nil {
						log.Error("upgrade failed; this process keeps serving", "error", err.Error())
						if err := rejoin(); err != nil {
							log.Error("fleet: cannot rejoin after the failed upgrade", "error", err.Error())
						}
					}
				}()
			default:
				log.Info("stopping", "signal", sig.String())
				return srv.Drain()
			}
		case <-upg.Exit():
			log.Info("a new process took over; draining")
			return srv.Handover()
		}
	}
}

// runUpgrade asks a running edgeproxy to hand over to a new process (the
// same as sending it SIGUSR2) and waits for the new one to be serving.
func runUpgrade(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	fs.SetOutput(stdout)
	pidFile := fs.String("pid-file", "", "the pid file given to edgeproxy run -pid-file")
	pid := fs.Int("pid", 0, "the pid of the running edgeproxy (instead of -pid-file)")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for the new process")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	old := *pid
	if old == 0 {
		if *pidFile == "" {
			return fmt.Errorf("name the running process with -pid-file or -pid")
		}
		n, err := readPID(*pidFile)
		if err != nil {
			return err
		}
		old = n
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("signalling pid %d: %w", old, err)
	}
	if *pidFile == "" {
		fmt.Fprintf(stdout, "sent SIGUSR2 to %d\n", old)
		return nil
	}
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		if n, err := readPID(*pidFile); err == nil && n != old {
			fmt.Fprintf(stdout, "pid %d handed over to pid %d\n", old, n)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no new process became ready within %s (see the log of pid %d)", *wait, old)
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
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
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := configArg(fs, path); err != nil {
		fmt.Fprintf(stderr, "edgeproxy validate: %v\n", err)
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
	fs.SetOutput(stdout)
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

// ticketKeysFile names the file an upgrade passes the session-ticket
// keys in.
const ticketKeysFile = "edgeproxy-ticket-keys"

// handOverTicketKeys gives the process an upgrade starts the session
// ticket keys, so the sessions of this one's clients resume there. They
// travel in an anonymous memory file the new process inherits, never on
// disk.
func handOverTicketKeys(upg *tableflip.Upgrader, keys []tlsterm.TicketKey) error {
	fd, err := unix.MemfdCreate(ticketKeysFile, unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), ticketKeysFile)
	defer f.Close()
	if _, err := f.Write(tlsterm.MarshalTicketKeys(keys)); err != nil {
		return err
	}
	return upg.Fds.AddFile(ticketKeysFile, f)
}

// inheritedTicketKeys are the keys of the process this one takes over
// from, if it handed any over.
func inheritedTicketKeys(upg *tableflip.Upgrader, log *slog.Logger) []tlsterm.TicketKey {
	f, err := upg.Fds.File(ticketKeysFile)
	if f == nil || err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err == nil {
		var keys []tlsterm.TicketKey
		if keys, err = tlsterm.ParseTicketKeys(b); err == nil {
			return keys
		}
	}
	log.Warn("session ticket keys of the previous process unreadable: its clients' sessions do not resume here", "error", err.Error())
	return nil
}

// configArg takes the config file as an argument too (`edgeproxy
// validate FILE`), as well as -config; giving both, or more than one
// file, is an error.
func configArg(fs *flag.FlagSet, path *string) error {
	switch fs.NArg() {
	case 0:
		return nil
	case 1:
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "config" })
		if set && *path != fs.Arg(0) {
			return fmt.Errorf("config file given twice: -config %s and %s", *path, fs.Arg(0))
		}
		*path = fs.Arg(0)
		return nil
	}
	return fmt.Errorf("one config file, not %d: %s", fs.NArg(), strings.Join(fs.Args(), " "))
}
