//go:build linux

package security_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cMachine answers every request with "for PATH"; on a HEAD it also
// sends a body, then a second response on the ended stream and data on a
// stream the proxy never opened: everything a broken h2 app could send
// that belongs to no request.
func h2cMachine(c *recConn) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	headers := func(id uint32, endStream bool, fields ...string) {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(),
			EndHeaders: true, EndStream: endStream})
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			path := f.PseudoValue("path")
			body := "for " + path
			id := f.StreamID
			if f.PseudoValue("method") == http.MethodHead {
				headers(id, false, ":status", "200", "content-length", strconv.Itoa(len(body)))
				fr.WriteData(id, true, []byte(poison))
				headers(id, true, ":status", "200", "content-length", "6")
				fr.WriteData(id+2, true, []byte("poison"))
				continue
			}
			headers(id, false, ":status", "200", "content-length", strconv.Itoa(len(body)))
			fr.WriteData(id, true, []byte(body))
		}
	}
}

// TestDesyncH2CBackend: the same rule on the h2c upstream path: whatever a
// machine sends that is not the answer to a request never reaches another
// client.
func TestDesyncH2CBackend(t *testing.T) {
	rec := startRecorder(t, h2cMachine)
	cfg := withApps(baseConfig, `
    [apps.http_service.http_options]
    h2_backend = true
`)
	env := startProxy(t, cfg, rec.Port())
	req, _ := http.NewRequest(http.MethodHead, "https://"+env.tlsAddr+"/1", nil)
	resp, err := client(t, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i, h2 := range []bool{false, true, false} {
		path := "/next" + string(rune('a'+i))
		url := "http://" + env.plainAddr + path
		if h2 {
			url = "https://" + env.tlsAddr + path
		}
		// The machine's DATA on a HEAD stream is a protocol error that
		// ends the whole h2c connection: a request in flight on it may
		// fail (502 PC03) and be asked again, as a client would. What
		// must never happen is an answer that belongs to another request.
		var got string
		var status int
		for attempt := 0; attempt < 3; attempt++ {
			resp, err := client(t, h2).Get(url)
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got, status = string(b), resp.StatusCode
			if status != 502 || resp.Header.Get("Edgeproxy-Error-Code") != "PC03" {
				break
			}
		}
		if want := "for " + path; got != want {
			t.Errorf("client %d asked for %s, got status %d body %q", i, path, status, got)
		}
	}
}
