package iox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// step is one scripted Read result.
type step struct {
	data string
	err  error
}

// scriptReader replays steps and fails the test if read again after it has
// returned an error: Copy must never read past a terminal error.
type scriptReader struct {
	t     *testing.T
	steps []step
	calls int
	dead  bool
}

func (r *scriptReader) Read(p []byte) (int, error) {
	r.calls++
	if r.dead {
		r.t.Errorf("Read call %d after a terminal error", r.calls)
		return 0, io.EOF
	}
	if len(r.steps) == 0 {
		r.dead = true
		return 0, io.EOF
	}
	s := r.steps[0]
	r.steps = r.steps[1:]
	n := copy(p, s.data)
	if s.err != nil {
		r.dead = true
	}
	return n, s.err
}

// shortWriter accepts at most limit bytes per call and reports no error.
type shortWriter struct{ limit int }

func (w shortWriter) Write(p []byte) (int, error) { return min(len(p), w.limit), nil }

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestCopy(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		steps   []step
		dst     io.Writer // nil: a bytes.Buffer
		wantN   int64
		wantOut string
		wantErr error
	}{
		{name: "data then EOF", steps: []step{{data: "hello "}, {data: "world"}}, wantN: 11, wantOut: "hello world"},
		{name: "data with EOF", steps: []step{{data: "last", err: io.EOF}}, wantN: 4, wantOut: "last"},
		{name: "empty source", wantN: 0},
		{name: "read error after data", steps: []step{{data: "ab"}, {data: "c", err: boom}}, wantN: 3, wantOut: "abc", wantErr: boom},
		{name: "wrapped EOF is EOF", steps: []step{{data: "x", err: errWrap{io.EOF}}}, wantN: 1, wantOut: "x"},
		{name: "some empty reads", steps: []step{{}, {}, {data: "a"}, {}, {data: "b"}}, wantN: 2, wantOut: "ab"},
		{name: "short write", steps: []step{{data: "abcdef"}}, dst: shortWriter{limit: 2}, wantN: 2, wantErr: io.ErrShortWrite},
		{name: "write error", steps: []step{{data: "abc"}}, dst: errWriter{err: boom}, wantN: 0, wantErr: boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			dst := tc.dst
			if dst == nil {
				dst = &out
			}
			src := &scriptReader{t: t, steps: tc.steps}
			n, err := Copy(dst, src, make([]byte, 8))
			if n != tc.wantN || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("Copy = %d, %v; want %d, %v", n, err, tc.wantN, tc.wantErr)
			}
			if tc.dst == nil && out.String() != tc.wantOut {
				t.Errorf("copied %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
}

type errWrap struct{ err error }

func (e errWrap) Error() string { return "wrapped: " + e.err.Error() }
func (e errWrap) Unwrap() error { return e.err }

// stuckReader is the incident's shape: a reader that neither delivers bytes
// nor reports an end.
type stuckReader struct{ calls int }

func (r *stuckReader) Read([]byte) (int, error) {
	r.calls++
	return 0, nil
}

func TestCopyEndsOnZeroProgress(t *testing.T) {
	src := &stuckReader{}
	n, err := Copy(io.Discard, src, make([]byte, 64))
	if n != 0 || err != io.ErrNoProgress {
		t.Fatalf("Copy = %d, %v; want 0, io.ErrNoProgress", n, err)
	}
	if src.calls != maxEmptyReads {
		t.Errorf("reader called %d times, want exactly %d", src.calls, maxEmptyReads)
	}
}

// The counter resets on progress: 99 empty reads between real ones are a
// slow reader, not a stuck one.
func TestCopyEmptyReadsResetOnProgress(t *testing.T) {
	var steps []step
	for range 3 {
		for range maxEmptyReads - 1 {
			steps = append(steps, step{})
		}
		steps = append(steps, step{data: "x"})
	}
	var out bytes.Buffer
	n, err := Copy(&out, &scriptReader{t: t, steps: steps}, make([]byte, 8))
	if n != 3 || err != nil || out.String() != "xxx" {
		t.Fatalf("Copy = %d, %v, %q; want 3, nil, \"xxx\"", n, err, out.String())
	}
}

type liarReader struct{ n int }

func (r liarReader) Read([]byte) (int, error) { return r.n, nil }

type liarWriter struct{}

func (liarWriter) Write(p []byte) (int, error) { return len(p) + 1, nil }

func TestCopyRejectsInvalidCounts(t *testing.T) {
	if _, err := Copy(io.Discard, liarReader{n: 9}, make([]byte, 8)); err != errInvalidRead {
		t.Errorf("overlong read: err = %v, want errInvalidRead", err)
	}
	if _, err := Copy(io.Discard, liarReader{n: -1}, make([]byte, 8)); err != errInvalidRead {
		t.Errorf("negative read: err = %v, want errInvalidRead", err)
	}
	if n, err := Copy(liarWriter{}, strings.NewReader("abc"), make([]byte, 8)); n != 0 || err != errInvalidWrite {
		t.Errorf("overlong write: Copy = %d, %v; want 0, errInvalidWrite", n, err)
	}
	if _, err := Copy(io.Discard, strings.NewReader("abc"), nil); err != errEmptyBuffer {
		t.Errorf("nil buffer: err = %v, want errEmptyBuffer", err)
	}
}

func TestBufferPool(t *testing.T) {
	if got := NewBufferPool(0).Size(); got != DefaultBufferSize {
		t.Errorf("NewBufferPool(0).Size() = %d, want %d", got, DefaultBufferSize)
	}
	p := NewBufferPool(1024)
	b := p.Get()
	if len(*b) != 1024 {
		t.Fatalf("Get returned %d bytes, want 1024", len(*b))
	}
	*b = (*b)[:10] // a caller that resliced before returning it
	p.Put(b)
	short := make([]byte, 10)
	p.Put(&short) // foreign size: must be dropped
	p.Put(nil)
	for range 4 {
		if got := p.Get(); len(*got) != 1024 {
			t.Fatalf("Get after Put returned %d bytes, want 1024", len(*got))
		}
	}
}

// zeroSource yields n bytes without touching the buffer, so the benchmark
// measures the loop and not a data generator.
type zeroSource struct{ n int }

func (z *zeroSource) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), z.n)
	z.n -= k
	return k, nil
}

func BenchmarkCopy(b *testing.B) {
	const total = 1 << 20
	for _, size := range []int{4 << 10, DefaultBufferSize} {
		b.Run(fmt.Sprintf("buf=%dKiB", size>>10), func(b *testing.B) {
			buf := make([]byte, size)
			src := &zeroSource{}
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				src.n = total
				if _, err := Copy(io.Discard, src, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
