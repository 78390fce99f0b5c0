package peek

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestPeekProperty drives Peek and Read over any split of any stream into
// reads, with any cap and any decide threshold, and holds them to the
// contract: Peek returns a prefix of what is unread, no longer than the cap,
// with the error that explains why it stopped; interleaved Peeks and Reads
// of any size give back the stream exactly, then io.EOF.
func TestPeekProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Sizes are drawn directly: rapid's slices favour short ones, and
		// the cap and the buffer growth only show on longer streams.
		stream := make([]byte, rapid.IntRange(0, 6000).Draw(t, "stream length"))
		seed := rapid.Byte().Draw(t, "seed")
		for i := range stream {
			stream[i] = byte(i*7) ^ seed
		}
		maxChunk := rapid.IntRange(1, 4000).Draw(t, "max chunk")
		var chunks [][]byte
		for rest := stream; len(rest) > 0; {
			n := rapid.IntRange(1, min(maxChunk, len(rest))).Draw(t, "chunk")
			chunks = append(chunks, bytes.Clone(rest[:n]))
			rest = rest[n:]
		}
		c := New(&scriptConn{chunks: chunks, withLast: rapid.Bool().Draw(t, "eof with data")},
			rapid.IntRange(1, 5000).Draw(t, "max"))

		var got []byte // what Read returned so far
		for step := 0; ; step++ {
			if rapid.Bool().Draw(t, "peek") {
				want := rapid.IntRange(0, 6000).Draw(t, "want")
				calls := 0
				p, err := c.Peek(time.Now().Add(time.Minute), needBytes(want, &calls))
				unread := stream[len(got):]
				switch {
				case !bytes.HasPrefix(unread, p):
					t.Fatalf("Peek returned %d bytes that are not the next ones", len(p))
				case len(p) > c.max:
					t.Fatalf("Peek buffered %d bytes, cap %d", len(p), c.max)
				case err == nil && len(p) < want:
					t.Fatalf("Peek stopped at %d bytes without an error, decide wanted %d", len(p), want)
				case errors.Is(err, ErrTooLarge) && (len(p) != c.max || len(p) >= want):
					t.Fatalf("ErrTooLarge with %d of %d bytes, cap %d", len(p), want, c.max)
				case err == io.EOF && (len(p) != len(unread) || len(p) >= want):
					t.Fatalf("io.EOF with %d of %d unread bytes, decide wanted %d", len(p), len(unread), want)
				case err != nil && err != io.EOF && !errors.Is(err, ErrTooLarge):
					t.Fatalf("Peek: %v", err)
				}
			}
			p := make([]byte, rapid.IntRange(0, 3000).Draw(t, "read"))
			n, err := c.Read(p)
			switch {
			case n == 0 && err == nil && len(p) > 0:
				t.Fatalf("Read returned (0, nil)")
			case err == io.EOF:
				got = append(got, p[:n]...)
				if !bytes.Equal(got, stream) {
					t.Fatalf("read %d bytes before EOF, want the %d-byte stream", len(got), len(stream))
				}
				return
			case err != nil:
				t.Fatalf("Read: %v", err)
			}
			got = append(got, p[:n]...)
		}
	})
}
