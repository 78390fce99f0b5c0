package fleet

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"
)

func TestCertKeyRoundTrip(t *testing.T) {
	for _, p := range []string{
		"acme/localhost-14000-dir/users/ops@example.com/ops.json",
		"certificates/acme-v02.api.letsencrypt.org-directory/wildcard_.example.com/wildcard_.example.com.crt",
		"issue_cert_a.example.com", "=x=", "",
	} {
		k := certKey(p)
		for i := 0; i < len(k); i++ {
			if c := k[i]; c == '.' || c == '@' || c == '*' || c == ' ' {
				t.Errorf("key %q of %q holds %q", k, p, c)
			}
		}
		if back, err := certPath(k); err != nil || back != p {
			t.Errorf("certPath(certKey(%q)) = %q, %v", p, back, err)
		}
	}
	for _, bad := range []string{"=", "=4", "=ZZ"} {
		if _, err := certPath(bad); err == nil {
			t.Errorf("certPath(%q) accepted", bad)
		}
	}
}

func FuzzCertKey(f *testing.F) {
	f.Add("acme/users/ops@example.com/ops.json")
	f.Fuzz(func(t *testing.T, p string) {
		if back, err := certPath(certKey(p)); err != nil || back != p {
			t.Errorf("round trip of %q: %q, %v", p, back, err)
		}
		_, _ = certPath(p) // never panics
	})
}

// CertStorage behaves as certmagic expects of a storage: files by path,
// directories by prefix, fs.ErrNotExist for what is absent, and locks
// that exclude another node until unlocked.
func TestCertStorage(t *testing.T) {
	store := embeddedStore(t)
	a := &CertStorage{Fleet: func() *Store { return store }, Holder: "a"}
	b := &CertStorage{Fleet: func() *Store { return store }, Holder: "b"}
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := a.Load(ctx, "certificates/ca/a.example.com/a.example.com.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of nothing: %v, want fs.ErrNotExist", err)
	}
	files := map[string]string{
		"certificates/ca/a.example.com/a.example.com.crt": "cert a",
		"certificates/ca/a.example.com/a.example.com.key": "key a",
		"certificates/ca/b.example.com/b.example.com.crt": "cert b",
		"acme/ca/users/ops@example.com/ops.json":          "account",
	}
	for k, v := range files {
		if err := a.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		got, err := b.Load(ctx, k)
		if err != nil || string(got) != v {
			t.Errorf("Load(%s) = %q, %v", k, got, err)
		}
	}
	if info, err := b.Stat(ctx, "certificates/ca/a.example.com/a.example.com.crt"); err != nil || !info.IsTerminal || info.Size != 6 {
		t.Errorf("Stat of a file: %+v, %v", info, err)
	}
	if info, err := b.Stat(ctx, "certificates/ca"); err != nil || info.IsTerminal {
		t.Errorf("Stat of a directory: %+v, %v", info, err)
	}
	if !b.Exists(ctx, "certificates/ca/b.example.com") || b.Exists(ctx, "certificates/ca/c.example.com") {
		t.Error("Exists is wrong about a directory")
	}
	top, err := b.List(ctx, "certificates/ca", false)
	slices.Sort(top)
	if err != nil || !slices.Equal(top, []string{"certificates/ca/a.example.com", "certificates/ca/b.example.com"}) {
		t.Errorf("List non-recursive: %v, %v", top, err)
	}
	all, err := b.List(ctx, "certificates", true)
	if err != nil || len(all) != 3 {
		t.Errorf("List recursive: %v, %v", all, err)
	}
	if err := b.Delete(ctx, "certificates/ca/a.example.com"); err != nil {
		t.Fatal(err)
	}
	if a.Exists(ctx, "certificates/ca/a.example.com/a.example.com.key") {
		t.Error("a file survived the deletion of its directory")
	}
	if !a.Exists(ctx, "certificates/ca/b.example.com/b.example.com.crt") {
		t.Error("Delete removed a sibling")
	}

	// Locks: b waits while a holds the lock, and gets it once a unlocks.
	if err := a.Lock(ctx, "issue_cert_a.example.com"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	if err := b.Lock(short, "issue_cert_a.example.com"); err == nil {
		t.Fatal("b took a lock a holds")
	}
	cancelShort()
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_a.example.com") }()
	time.Sleep(200 * time.Millisecond)
	if err := a.Unlock(ctx, "issue_cert_a.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("b did not get the lock a released: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_a.example.com"); err != nil {
		t.Fatal(err)
	}
	// Two goroutines of one node exclude each other too.
	if err := a.Lock(ctx, "issue_cert_c.example.com"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort = context.WithTimeout(ctx, 1500*time.Millisecond)
	if err := a.Lock(short, "issue_cert_c.example.com"); err == nil {
		t.Fatal("a second goroutine of a took a lock a holds")
	}
	cancelShort()
	a.Unlock(ctx, "issue_cert_c.example.com")
	// Another name is independent.
	if err := a.Lock(ctx, "issue_cert_b.example.com"); err != nil {
		t.Fatal(err)
	}
	a.Unlock(ctx, "issue_cert_b.example.com")
}
