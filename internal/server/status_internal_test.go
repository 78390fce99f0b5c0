package server

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestProfileFilesNewestFirst: the status page lists the tripwire's
// newest files first, at most n, and skips what is not a profile file.
func TestProfileFilesNewestFirst(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	for i := 0; i < 7; i++ {
		p := filepath.Join(dir, "cpu-"+strconv.Itoa(i)+".pprof")
		if err := os.WriteFile(p, make([]byte, i), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(p, mt, mt)
	}
	os.WriteFile(filepath.Join(dir, ".tmp-partial"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	got := profileFiles(dir, 5)
	if len(got) != 5 {
		t.Fatalf("%d files, want 5: %+v", len(got), got)
	}
	for i, f := range got {
		want := filepath.Join(dir, "cpu-"+strconv.Itoa(6-i)+".pprof")
		if f.Name != want || f.Bytes != int64(6-i) {
			t.Errorf("file %d: %+v, want %s", i, f, want)
		}
	}
	if got := profileFiles(filepath.Join(dir, "missing"), 5); got == nil || len(got) != 0 {
		t.Errorf("missing dir: %+v", got)
	}
}
