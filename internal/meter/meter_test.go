package meter

import (
	"io"
	"net"
	"testing"
)

func TestCountsAndSettles(t *testing.T) {
	a, b := net.Pipe()
	m := New(a)
	go func() {
		b.Write([]byte("hello"))
		buf := make([]byte, 3)
		io.ReadFull(b, buf)
		b.Close()
	}()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(m, buf); err != nil {
		t.Fatal(err)
	}
	m.Write([]byte("abc"))
	if in, out := m.Bytes(); in != 5 || out != 3 {
		t.Errorf("in %d out %d", in, out)
	}
	var apps Apps
	var settled [2]int64
	m.Settle(&apps, "web", &settled)
	m.Settle(&apps, "web", &settled) // no double counting
	tot := apps.Totals("web")
	if tot.In.Load() != 5 || tot.Out.Load() != 3 {
		t.Errorf("totals %d/%d", tot.In.Load(), tot.Out.Load())
	}
	if n := apps.Names(); len(n) != 1 || n[0] != "web" {
		t.Errorf("names %v", n)
	}
	if m.Unwrap() != a {
		t.Error("Unwrap")
	}
	m.Close()
}
