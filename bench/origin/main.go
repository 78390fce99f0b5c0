// Command origin is the benchmark suite's backend: the machine every proxy
// under test forwards to. It is deliberately cheap, so that on the shared
// load-generator core it takes as little CPU as possible away from the client.
//
// HTTP/1.1 (keep-alive, a minimal hand-written server, not net/http):
//
//	GET  /small   100-byte body
//	GET  /large   1 MiB body
//	GET  /text    64 KiB of HTML-like text (compresses about 4:1, like a
//	              real page), for the compression scenario
//	POST /echo    the request body back (Content-Length or chunked)
//	GET  /healthz "ok"
//
// Raw TCP:
//
//	-tcp-echo ADDR    every byte read is written back
//	-tcp-source ADDR  the client sends an 8-byte big-endian count N, the
//	                  server answers with N bytes; repeat on the same connection
//
// Usage: origin -http 127.0.0.1:18101 -tcp-echo 127.0.0.1:18102 -tcp-source 127.0.0.1:18103
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httputil"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

const (
	smallSize = 100
	largeSize = 1 << 20
	textSize  = 64 << 10
	// maxSourceChunk bounds one tcp-source answer, so a bad count cannot
	// keep the server writing forever.
	maxSourceChunk = 1 << 30
)

var (
	smallResp  []byte
	largeResp  []byte
	textResp   []byte
	notFound   = []byte("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n")
	healthResp = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
	badReq     = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	filler     = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
)

func response(bodySize int) []byte {
	hdr := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", bodySize)
	b := make([]byte, 0, len(hdr)+bodySize)
	b = append(b, hdr...)
	for i := 0; i < bodySize; i++ {
		b = append(b, 'a'+byte(i%26))
	}
	return b
}

// textResponse is an HTML page of words drawn from a small vocabulary by
// a fixed sequence: the same bytes every run, and about as compressible
// as real markup (a repeated pattern would flatter every compressor).
func textResponse(bodySize int) []byte {
	words := strings.Fields("the of edge proxy machine request response region app " +
		"connection header body stream client server load balance certificate fleet worker " +
		"<p> </p> <li> </li> <a href=\"/docs\"> </a> class=\"item\" data-id= 0 1 2 3 4 5 6 7 8 9")
	body := make([]byte, 0, bodySize)
	x := uint32(2463534242)
	for len(body) < bodySize {
		// xorshift32: deterministic, no math/rand state to seed.
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		w := words[x%uint32(len(words))]
		if x%7 == 0 {
			body = append(body, '\n')
		}
		body = append(body, w...)
		body = append(body, ' ')
	}
	body = body[:bodySize]
	hdr := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n", bodySize)
	return append([]byte(hdr), body...)
}

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18101", "HTTP/1.1 listen address (empty: off)")
	echoAddr := flag.String("tcp-echo", "", "raw TCP echo listen address (empty: off)")
	srcAddr := flag.String("tcp-source", "", "raw TCP source listen address (empty: off)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("origin: ")

	smallResp = response(smallSize)
	largeResp = response(largeSize)
	textResp = textResponse(textSize)

	if *httpAddr != "" {
		serve(*httpAddr, serveHTTP)
	}
	if *echoAddr != "" {
		serve(*echoAddr, serveEcho)
	}
	if *srcAddr != "" {
		serve(*srcAddr, serveSource)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

func serve(addr string, handle func(net.Conn)) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening %s", ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go handle(c)
		}
	}()
}

// serveHTTP is a keep-alive HTTP/1.1 loop: parse the request head, drain a
// body if any, write a prebuilt answer. Connection: close is honoured.
func serveHTTP(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	bw := bufio.NewWriterSize(c, 16<<10)
	for {
		req, err := readRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				bw.Write(badReq)
				bw.Flush()
			}
			return
		}
		var werr error
		switch req.path {
		case "/small":
			werr = discardBody(br, req)
			if werr == nil {
				_, werr = bw.Write(smallResp)
			}
		case "/large":
			werr = discardBody(br, req)
			if werr == nil {
				bw.Flush()
				_, werr = c.Write(largeResp) // one write; no copy through bw
			}
		case "/echo":
			werr = echoBody(br, bw, req)
		case "/text":
			werr = discardBody(br, req)
			if werr == nil {
				_, werr = bw.Write(textResp)
			}
		case "/healthz":
			werr = discardBody(br, req)
			if werr == nil {
				_, werr = bw.Write(healthResp)
			}
		default:
			werr = discardBody(br, req)
			if werr == nil {
				_, werr = bw.Write(notFound)
			}
		}
		if werr != nil {
			return
		}
		// Pipelined requests are answered together; otherwise flush now.
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
		if req.close {
			bw.Flush()
			return
		}
	}
}

type request struct {
	method, path  string
	contentLength int64 // -1: none
	chunked       bool
	close         bool
}

func readRequest(br *bufio.Reader) (*request, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	// METHOD SP PATH SP VERSION
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return nil, errors.New("bad request line")
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		return nil, errors.New("bad request line")
	}
	req := &request{method: string(line[:sp1]), contentLength: -1}
	path := rest[:sp2]
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	req.path = string(path)
	if bytes.Equal(rest[sp2+1:], []byte("HTTP/1.0")) {
		req.close = true
	}
	for {
		h, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if len(h) == 0 {
			return req, nil
		}
		colon := bytes.IndexByte(h, ':')
		if colon < 0 {
			return nil, errors.New("bad header")
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(val), 10, 64)
			if err != nil || n < 0 {
				return nil, errors.New("bad content-length")
			}
			req.contentLength = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			req.chunked = bytes.Contains(bytes.ToLower(val), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.Contains(bytes.ToLower(val), []byte("close")) {
				req.close = true
			} else if bytes.Contains(bytes.ToLower(val), []byte("keep-alive")) {
				req.close = false
			}
		}
	}
}

func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("line too long")
		}
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func bodyReader(br *bufio.Reader, req *request) io.Reader {
	switch {
	case req.chunked:
		return httputil.NewChunkedReader(br)
	case req.contentLength > 0:
		return io.LimitReader(br, req.contentLength)
	}
	return nil
}

func discardBody(br *bufio.Reader, req *request) error {
	r := bodyReader(br, req)
	if r == nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if req.chunked {
		return discardTrailers(br)
	}
	return nil
}

// discardTrailers reads the trailer section after the last chunk, up to
// and including the blank line.
func discardTrailers(br *bufio.Reader) error {
	for {
		l, err := readLine(br)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			return nil
		}
	}
}

func echoBody(br *bufio.Reader, bw *bufio.Writer, req *request) error {
	r := bodyReader(br, req)
	if r == nil {
		_, err := bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n")
		return err
	}
	if !req.chunked {
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", req.contentLength)
		_, err := io.Copy(bw, r)
		return err
	}
	bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.Copy(cw, r); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	return discardTrailers(br)
}

func serveEcho(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

// serveSource answers each 8-byte count with that many bytes.
func serveSource(c net.Conn) {
	defer c.Close()
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint64(hdr[:])
		if n > maxSourceChunk {
			return
		}
		for n > 0 {
			chunk := filler
			if uint64(len(chunk)) > n {
				chunk = chunk[:n]
			}
			w, err := c.Write(chunk)
			if err != nil {
				return
			}
			n -= uint64(w)
		}
	}
}
