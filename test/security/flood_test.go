//go:build linux

package security_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	const ticks = 100 // USER_HZ on Linux
	return (utime + stime) / ticks
}

// dialH2 opens an HTTP/2 connection over TLS and sends the preface and
// an empty SETTINGS frame.
func dialH2(t *testing.T, addr string) (*tls.Conn, *http2.Framer) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "sec.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c, fr
}

// readGoAway reads frames until a GOAWAY, the end of the connection or
// the deadline, and returns the GOAWAY's error code, if one came.
func readGoAway(c net.Conn, fr *http2.Framer) (http2.ErrCode, bool) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode, true
		}
	}
}

// flood writes n rounds of frames from another goroutine (the proxy may
// stop reading) and sends how many it wrote on the returned channel.
func flood(c net.Conn, n int, round func(fr *http2.Framer, i int) error) <-chan int {
	bw := bufio.NewWriterSize(c, 64<<10)
	fr := http2.NewFramer(bw, nil)
	done := make(chan int, 1)
	go func() {
		sent := 0
		defer func() { done <- sent }()
		for ; sent < n; sent++ {
			if round(fr, sent) != nil {
				return
			}
		}
		bw.Flush()
	}()
	return done
}

// floodEnv is a proxy in front of a machine that counts requests.
func floodEnv(t *testing.T) (*proxyEnv, *recorder) {
	rec := startRecorder(t, serveEach(func(c *recConn, req *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("ok"))
		return true
	}))
	return startProxy(t, withApps(baseConfig, "\n[log]\naccess_log = \"off\"\n"), rec.Port()), rec
}

// TestH2RapidReset: 100,000 HEADERS+RST_STREAM pairs. Before, the proxy
// spent seconds of CPU, sent about 1,300 of the requests to the machine
// and never said GOAWAY; now the connection is told GOAWAY
// ENHANCE_YOUR_CALM after the allowed resets, and CPU stays small.
func TestH2RapidReset(t *testing.T) {
	env, rec := floodEnv(t)
	cpu0 := cpuSeconds(t, env.pid)
	c, fr := dialH2(t, env.tlsAddr)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "sec.test"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	done := flood(c, 100000, func(fr *http2.Framer, i int) error {
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
			return err
		}
		return fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	code, got := readGoAway(c, fr)
	c.Close()
	sent := <-done
	time.Sleep(500 * time.Millisecond) // let the proxy finish what it started
	cpu := cpuSeconds(t, env.pid) - cpu0
	reached := rec.Requests()
	t.Logf("rapid reset: %d pairs written before the proxy closed, %d requests reached the machine, at most %d machine connections held at once, %d held after, %.2f s of proxy CPU, GOAWAY %v (%v)",
		sent, reached, rec.peak.Load(), rec.live.Load(), cpu, got, code)
	if !got || code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("no GOAWAY ENHANCE_YOUR_CALM (got %v, code %v)", got, code)
	}
	if reached > 200 {
		t.Errorf("%d requests reached the machine, want at most the ~100 allowed resets' worth", reached)
	}
}

// TestH2ControlFloods: SETTINGS and PING frames sent without reading the
// acknowledgements. Before, 3 million SETTINGS cost 7.7 s of CPU and the
// connection was never closed.
func TestH2ControlFloods(t *testing.T) {
	env, _ := floodEnv(t)
	for _, kind := range []string{"settings", "ping"} {
		t.Run(kind, func(t *testing.T) {
			cpu0 := cpuSeconds(t, env.pid)
			c, fr := dialH2(t, env.tlsAddr)
			done := flood(c, 300000, func(fr *http2.Framer, i int) error {
				if kind == "settings" {
					return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
				}
				return fr.WritePing(false, [8]byte{byte(i)})
			})
			// Read nothing for a while, as the attacker does, then look
			// for the GOAWAY.
			time.Sleep(time.Second)
			code, got := readGoAway(c, fr)
			c.Close()
			sent := <-done
			cpu := cpuSeconds(t, env.pid) - cpu0
			t.Logf("%s flood: %d frames written before the proxy closed, %.2f s of proxy CPU, GOAWAY %v (%v)", kind, sent, cpu, got, code)
			if !got || code != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("no GOAWAY ENHANCE_YOUR_CALM (got %v, code %v)", got, code)
			}
		})
	}
}
