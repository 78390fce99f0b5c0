// Command client is the benchmark suite's own load generator for what wrk
// and h2load cannot do:
//
//	client handshake  full TLS handshakes, one small HTTP/1.1 request per
//	                  connection, never resuming a session
//	client idle       open N keep-alive connections (TLS, or plain HTTP/1.1
//	                  with -plain), one request each, then hold them idle
//	                  until stdin closes
//	client stream     raw TCP: ask the origin's tcp-source for CHUNK bytes
//	                  at a time on C connections and count the bytes
//	client get        HTTP/1.1 keep-alive GETs on C connections, reading
//	                  each body READ bytes at a time (wrk reads 8 KiB)
//
// Each prints one JSON object on stdout (idle prints it once every
// connection is open, then waits). Pin it with taskset; it is meant to run
// with GOMAXPROCS=1 on the load generator's core.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Result is what every subcommand prints; the driver parses it.
type Result struct {
	Mode      string  `json:"mode"`
	Ops       int64   `json:"ops"`    // handshakes, requests or chunks done
	Errors    int64   `json:"errors"` // failed attempts
	Bytes     int64   `json:"bytes"`  // payload bytes received
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	BytesSec  float64 `json:"bytes_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	Group     string  `json:"group,omitempty"`
	Version   string  `json:"tls_version,omitempty"`
	Cert      string  `json:"cert,omitempty"` // the served certificate's key: certKey
	Resumed   int64   `json:"resumed"`        // must stay 0
	FirstErr  string  `json:"first_error,omitempty"`
	// ErrorKinds counts the errors by message, with addresses removed.
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client handshake|idle|stream|get [flags]")
		os.Exit(2)
	}
	var (
		res Result
		err error
	)
	switch os.Args[1] {
	case "handshake":
		res, err = handshake(os.Args[2:])
	case "idle":
		res, err = idle(os.Args[2:])
	case "get":
		res, err = get(os.Args[2:])
	case "stream":
		res, err = stream(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func parseGroup(s string) (tls.CurveID, error) {
	switch strings.ToLower(s) {
	case "x25519":
		return tls.X25519, nil
	case "x25519mlkem768", "mlkem", "pq":
		return tls.X25519MLKEM768, nil
	case "p256", "p-256", "secp256r1":
		return tls.CurveP256, nil
	}
	return 0, fmt.Errorf("unknown group %q (x25519, x25519mlkem768, p256)", s)
}

// newTLSConfig is called once per connection: no state can carry over from
// one handshake to the next. Session tickets are disabled and there is no
// ClientSessionCache, so every handshake is a full one.
func newTLSConfig(sni string, group tls.CurveID, alpn []string) *tls.Config {
	return &tls.Config{
		ServerName:             sni,
		InsecureSkipVerify:     true, // the same for every proxy; saves the generator an ECDSA verify
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		CurvePreferences:       []tls.CurveID{group},
		SessionTicketsDisabled: true,
		NextProtos:             alpn,
	}
}

func request(path, host string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: edgeproxy-bench\r\n\r\n")
}

// readResponse reads one HTTP/1.1 response with a Content-Length body and
// returns the body length. Anything but 200 is an error.
func readResponse(br *bufio.Reader) (int64, error) {
	cl, err := readHead(br)
	if err != nil {
		return 0, err
	}
	_, err = io.CopyN(io.Discard, br, cl)
	return cl, err
}

// readHead reads a response head, which must be a 200 with a
// Content-Length, and returns that length.
func readHead(br *bufio.Reader) (int64, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200 ") {
		return 0, fmt.Errorf("status %q", strings.TrimSpace(line))
	}
	cl := int64(-1)
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		if name, val, ok := strings.Cut(h, ":"); ok && strings.EqualFold(name, "Content-Length") {
			cl, err = strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("content-length %q", val)
			}
		}
	}
	if cl < 0 {
		return 0, errors.New("response without Content-Length")
	}
	return cl, nil
}

type recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	ops      atomic.Int64
	errs     atomic.Int64
	bytes    atomic.Int64
	resumed  atomic.Int64
	firstErr atomic.Value
	version  atomic.Value
	group    atomic.Value
	cert     atomic.Value
	kinds    map[string]int64
}

func (r *recorder) ok(d time.Duration, n int64) {
	r.ops.Add(1)
	r.bytes.Add(n)
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

var addrRe = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+(->)?`)

func (r *recorder) fail(err error) {
	r.errs.Add(1)
	r.firstErr.CompareAndSwap(nil, err.Error())
	kind := addrRe.ReplaceAllString(err.Error(), "ADDR")
	r.mu.Lock()
	if r.kinds == nil {
		r.kinds = map[string]int64{}
	}
	if len(r.kinds) < 20 {
		r.kinds[kind]++
	} else if _, ok := r.kinds[kind]; ok {
		r.kinds[kind]++
	}
	r.mu.Unlock()
}

func (r *recorder) result(mode string, elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.Sort(r.lat)
	res := Result{
		Mode:       mode,
		Ops:        r.ops.Load(),
		Errors:     r.errs.Load(),
		Bytes:      r.bytes.Load(),
		Seconds:    elapsed.Seconds(),
		P50us:      percentile(r.lat, 0.50),
		P99us:      percentile(r.lat, 0.99),
		Resumed:    r.resumed.Load(),
		ErrorKinds: r.kinds,
	}
	if s := elapsed.Seconds(); s > 0 {
		res.OpsPerSec = float64(res.Ops) / s
		res.BytesSec = float64(res.Bytes) / s
	}
	if v, ok := r.firstErr.Load().(string); ok {
		res.FirstErr = v
	}
	if v, ok := r.version.Load().(string); ok {
		res.Version = v
	}
	if v, ok := r.group.Load().(string); ok {
		res.Group = v
	}
	if v, ok := r.cert.Load().(string); ok {
		res.Cert = v
	}
	return res
}

// percentile of sorted durations, nearest rank, in microseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

type commonFlags struct {
	addr, sni, path string
	conc            int
	dur             time.Duration
}

func addCommon(fs *flag.FlagSet, c *commonFlags) {
	fs.StringVar(&c.addr, "addr", "127.0.0.1:18111", "proxy address")
	fs.StringVar(&c.sni, "sni", "bench.local", "TLS server name and Host header")
	fs.StringVar(&c.path, "path", "/small", "request path")
	fs.IntVar(&c.conc, "c", 16, "concurrency (connections in flight)")
	fs.DurationVar(&c.dur, "d", 10*time.Second, "duration")
}

// handshake: each worker loops connect → full handshake → one request →
// close, until the duration is over. With -rate, the total rate is paced.
func handshake(args []string) (Result, error) {
	fs := flag.NewFlagSet("handshake", flag.ContinueOnError)
	var c commonFlags
	addCommon(fs, &c)
	groupName := fs.String("group", "x25519", "the only key exchange group offered: x25519 or x25519mlkem768")
	rate := fs.Float64("rate", 0, "handshakes per second in total (0: as fast as possible)")
	if err := fs.Parse(args); err != nil {
		return Result{}, err
	}
	group, err := parseGroup(*groupName)
	if err != nil {
		return Result{}, err
	}
	req := request(c.path, c.sni)
	var rec recorder
	ctx, cancel := context.WithTimeout(context.Background(), c.dur)
	defer cancel()
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer t.Stop()
		tick = t.C
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	start := time.Now()
	end, _ := ctx.Deadline()
	end = end.Add(-10 * time.Millisecond)
	var wg sync.WaitGroup
	for range c.conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				t0 := time.Now()
				n, err := oneHandshake(ctx, dialer, c.addr, newTLSConfig(c.sni, group, []string{"http/1.1"}), req, &rec)
				if err != nil {
					// A dial or handshake cut short by the end of the run is
					// not an error (the socket deadline can fire a moment
					// before ctx reports it).
					if ctx.Err() == nil && time.Now().Before(end) {
						rec.fail(err)
					}
					continue
				}
				rec.ok(time.Since(t0), n)
			}
		})
	}
	wg.Wait()
	return rec.result("handshake", time.Since(start)), nil
}

func oneHandshake(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config, req []byte, rec *recorder) (int64, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, err
	}
	st := tc.ConnectionState()
	if st.DidResume {
		rec.resumed.Add(1)
	}
	rec.version.CompareAndSwap(nil, tls.VersionName(st.Version))
	rec.group.CompareAndSwap(nil, st.CurveID.String())
	if rec.cert.Load() == nil { // named once: the generator's CPU is measured too
		rec.cert.CompareAndSwap(nil, certKey(st))
	}
	if _, err := tc.Write(req); err != nil {
		return 0, err
	}
	n, err := readResponse(bufio.NewReaderSize(tc, 4096))
	if err != nil {
		return 0, err
	}
	// The client closes first (close_notify, then FIN), so TIME_WAIT stays
	// on the client's side of loopback, where tcp_tw_reuse recycles ports.
	tc.Close()
	return n, nil
}

// certKey names the key of the certificate the server sent ("ECDSA P-256",
// "RSA-2048"), so that the driver can check that each proxy served the
// certificate the scenario is about.
func certKey(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return "none"
	}
	switch k := st.PeerCertificates[0].PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", k)
	}
}

// idle opens -n connections, -c at a time, each with a full handshake
// (none with -plain) and one request, keeps them open, prints the result
// and waits until stdin is closed (or -hold passes), then closes them.
func idle(args []string) (Result, error) {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	var c commonFlags
	addCommon(fs, &c)
	n := fs.Int("n", 10000, "connections to open and hold")
	hold := fs.Duration("hold", 120*time.Second, "longest time to hold them (stdin EOF ends it sooner)")
	groupName := fs.String("group", "x25519", "key exchange group")
	plain := fs.Bool("plain", false, "plain HTTP/1.1, no TLS (-sni is then the Host header only)")
	if err := fs.Parse(args); err != nil {
		return Result{}, err
	}
	group, err := parseGroup(*groupName)
	if err != nil {
		return Result{}, err
	}
	// A nil config means plain HTTP; otherwise one per connection, as in
	// handshake.
	tlsConfig := func() *tls.Config {
		if *plain {
			return nil
		}
		return newTLSConfig(c.sni, group, []string{"http/1.1"})
	}
	req := request(c.path, c.sni)
	var (
		rec   recorder
		mu    sync.Mutex
		conns []net.Conn
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), c.dur)
	defer cancel()
	start := time.Now()
	for range c.conc {
		wg.Go(func() {
			for next.Add(1) <= int64(*n) && ctx.Err() == nil {
				t0 := time.Now()
				conn, err := openIdle(ctx, dialer, c.addr, tlsConfig(), req)
				if err != nil {
					rec.fail(err)
					continue
				}
				rec.ok(time.Since(t0), 0)
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res := rec.result("idle", time.Since(start))
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Print now: the driver measures while we hold.
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return res, err
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
	case <-time.After(*hold):
	}
	// Check the connections are still alive: a proxy that closed them
	// early would have measured a smaller memory footprint.
	alive := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil && isTimeout(err) {
			alive++
		}
	}
	fmt.Fprintf(os.Stderr, "idle: %d of %d connections still open at the end\n", alive, len(conns))
	os.Exit(0) // the result was printed already
	return res, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// openIdle opens one connection, over TLS unless cfg is nil, and does one
// request on it.
func openIdle(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config, req []byte) (net.Conn, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := raw
	if cfg != nil {
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	if _, err := conn.Write(req); err != nil {
		raw.Close()
		return nil, err
	}
	// A small reader: a large one per connection would be the client's
	// memory, not the proxy's, but keep it bounded anyway.
	if _, err := readResponse(bufio.NewReaderSize(conn, 1024)); err != nil {
		raw.Close()
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return conn, nil
}

// stream: C connections, each repeatedly asks for -chunk bytes and reads
// them; latency is per chunk.
func stream(args []string) (Result, error) {
	fs := flag.NewFlagSet("stream", flag.ContinueOnError)
	var c commonFlags
	addCommon(fs, &c)
	chunk := fs.Int64("chunk", 1<<20, "bytes asked for per round trip")
	if err := fs.Parse(args); err != nil {
		return Result{}, err
	}
	return loop("stream", &c, func(ctx context.Context, rec *recorder) error {
		return streamConn(ctx, c.addr, *chunk, rec)
	}), nil
}

// loop runs conn on c.conc workers for c.dur, each opening a connection
// again when one fails, and counts the failures.
func loop(mode string, c *commonFlags, conn func(ctx context.Context, rec *recorder) error) Result {
	var rec recorder
	ctx, cancel := context.WithTimeout(context.Background(), c.dur)
	defer cancel()
	start := time.Now()
	end := start.Add(c.dur - 10*time.Millisecond)
	var wg sync.WaitGroup
	for range c.conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := conn(ctx, &rec); err != nil && ctx.Err() == nil && time.Now().Before(end) {
					rec.fail(err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return rec.result(mode, time.Since(start))
}

func streamConn(ctx context.Context, addr string, chunk int64, rec *recorder) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 256<<10)
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(chunk))
	for ctx.Err() == nil {
		t0 := time.Now()
		if _, err := conn.Write(hdr[:]); err != nil {
			return err
		}
		var got int64
		for got < chunk {
			n, err := conn.Read(buf[:min(int64(len(buf)), chunk-got)])
			got += int64(n)
			if err != nil {
				if ctx.Err() != nil {
					rec.bytes.Add(got) // bytes that did move count for throughput
					return nil
				}
				return err
			}
		}
		rec.ok(time.Since(t0), got)
	}
	return nil
}

// get: each of C connections sends GET path, reads the response head and
// then its body with reads of up to READ bytes, and repeats.
func get(args []string) (Result, error) {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	var c commonFlags
	addCommon(fs, &c)
	readSize := fs.Int("read", 64<<10, "bytes asked for per read of a body")
	if err := fs.Parse(args); err != nil {
		return Result{}, err
	}
	return loop("get", &c, func(ctx context.Context, rec *recorder) error {
		return getConn(ctx, &c, *readSize, rec)
	}), nil
}

func getConn(ctx context.Context, c *commonFlags, readSize int, rec *recorder) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	// A head buffer smaller than a read: once the head is parsed, body
	// reads of readSize bytes go to the socket directly.
	br := bufio.NewReaderSize(conn, 4096)
	buf := make([]byte, readSize)
	req := request(c.path, c.sni)
	for ctx.Err() == nil {
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			return err
		}
		cl, err := readHead(br)
		if err != nil {
			return err
		}
		var got int64
		for got < cl {
			n, err := br.Read(buf[:min(int64(len(buf)), cl-got)])
			got += int64(n)
			if err != nil {
				if ctx.Err() != nil {
					rec.bytes.Add(got)
					return nil
				}
				return err
			}
		}
		rec.ok(time.Since(t0), got)
	}
	return nil
}
