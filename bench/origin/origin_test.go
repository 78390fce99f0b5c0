package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServeHTTP(t *testing.T) {
	smallResp, largeResp, textResp = response(smallSize), response(largeSize), textResponse(textSize)
	cli, srv := net.Pipe()
	defer cli.Close()
	go serveHTTP(srv)
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(cli)

	// Keep-alive: three requests on one connection, one with a chunked body.
	reqs := []struct {
		raw, body string
		size      int
	}{
		{"GET /small HTTP/1.1\r\nHost: x\r\n\r\n", "", smallSize},
		{"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", -1},
		{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "abc", 3},
		{"GET /large HTTP/1.1\r\nHost: x\r\n\r\n", "", largeSize},
		{"GET /text HTTP/1.1\r\nHost: x\r\n\r\n", "", textSize},
	}
	for _, r := range reqs {
		go io.WriteString(cli, r.raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", r.raw, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%q: status %d, %v", r.raw, resp.StatusCode, err)
		}
		if r.body != "" && string(b) != r.body {
			t.Errorf("%q: body %q, want %q", r.raw, b, r.body)
		}
		if r.size >= 0 && len(b) != r.size {
			t.Errorf("%q: %d bytes, want %d", r.raw, len(b), r.size)
		}
	}
	go io.WriteString(cli, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown path: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after Connection: close: %v", err)
	}
}

func TestReadRequestRejectsGarbage(t *testing.T) {
	if _, err := readRequest(bufio.NewReader(strings.NewReader("garbage\r\n\r\n"))); err == nil {
		t.Error("no error for a request line without spaces")
	}
	if _, err := readRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"))); err == nil {
		t.Error("no error for a negative Content-Length")
	}
}
