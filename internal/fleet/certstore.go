package fleet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/nats-io/nats.go/jetstream"
)

// Certificates from ACME are shared by the fleet's edges: certmagic keeps
// its account, certificates, keys and challenge tokens in a JetStream
// bucket, and its locks are fleet leases, so one node orders a name and
// every node serves the result.

// BucketCerts holds certmagic's files, keyed by their storage paths.
const BucketCerts = "ep-certs"

// certLockTTL bounds how long a lock outlives a holder that died: a held
// lock is renewed every third of it.
const certLockTTL = 60 * time.Second

// CertStorage is a certmagic.Storage on the fleet's JetStream. Fleet
// returns the fleet's store now (nil while the node is not connected).
type CertStorage struct {
	Fleet func() *Store
	// Holder names this node in its locks.
	Holder string

	seq   atomic.Uint64
	mu    sync.Mutex
	held  map[string]heldLock // by lock name
	group sync.WaitGroup
}

var _ certmagic.Storage = (*CertStorage)(nil)

var errNotConnected = errors.New("fleet: not connected to NATS")

func (c *CertStorage) kv(ctx context.Context) (jetstream.KeyValue, error) {
	s := c.Fleet()
	if s == nil {
		return nil, errNotConnected
	}
	return s.bucket(ctx, BucketCerts)
}

// certKey escapes a storage path into a KV key: bytes other than letters,
// digits, '-', '_' and '/' become "=XX". Paths hold e-mail addresses and
// dots, which a key may not (a dot separates the subject's tokens).
func certKey(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		ch := path[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '_', ch == '/':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "=%02X", ch)
		}
	}
	return b.String()
}

// certPath undoes certKey.
func certPath(key string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] != '=' {
			b.WriteByte(key[i])
			continue
		}
		if i+2 >= len(key) {
			return "", fmt.Errorf("fleet: certificate key %q: bad escape", key)
		}
		var ch byte
		if _, err := fmt.Sscanf(key[i+1:i+3], "%02X", &ch); err != nil {
			return "", fmt.Errorf("fleet: certificate key %q: bad escape", key)
		}
		b.WriteByte(ch)
		i += 2
	}
	return b.String(), nil
}

// Store writes value at key.
func (c *CertStorage) Store(ctx context.Context, key string, value []byte) error {
	kv, err := c.kv(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, certKey(key), value)
	return err
}

// Load reads key; fs.ErrNotExist if there is none.
func (c *CertStorage) Load(ctx context.Context, key string) ([]byte, error) {
	kv, err := c.kv(ctx)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, certKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// Delete removes key and, if key is a directory, everything under it.
func (c *CertStorage) Delete(ctx context.Context, key string) error {
	kv, err := c.kv(ctx)
	if err != nil {
		return err
	}
	keys, err := c.list(ctx, kv, key, true)
	if err != nil {
		return err
	}
	for _, k := range append(keys, key) {
		if err := kv.Purge(ctx, certKey(k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (c *CertStorage) Exists(ctx context.Context, key string) bool {
	_, err := c.Stat(ctx, key)
	return err == nil
}

// List lists the keys under path: its direct children, or with recursive
// every file below it.
func (c *CertStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	kv, err := c.kv(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := c.list(ctx, kv, path, recursive)
	if err == nil && len(keys) == 0 {
		return nil, fs.ErrNotExist
	}
	return keys, err
}

func (c *CertStorage) list(ctx context.Context, kv jetstream.KeyValue, path string, recursive bool) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	prefix := strings.TrimSuffix(path, "/") + "/"
	if path == "" {
		prefix = ""
	}
	seen := map[string]bool{}
	var out []string
	for k := range lister.Keys() {
		p, err := certPath(k)
		if err != nil || !strings.HasPrefix(p, prefix) {
			continue
		}
		if !recursive {
			rest := strings.TrimPrefix(p, prefix)
			if dir, _, ok := strings.Cut(rest, "/"); ok {
				p = prefix + dir
			}
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// Stat describes key: a file, or a directory that has files below it.
func (c *CertStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	kv, err := c.kv(ctx)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	e, err := kv.Get(ctx, certKey(key))
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: e.Created(), Size: int64(len(e.Value())), IsTerminal: true}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return certmagic.KeyInfo{}, err
	}
	keys, err := c.list(ctx, kv, key, true)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, fs.ErrNotExist
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock takes the fleet-wide lock name, waiting while another node, or
// another goroutine of this one, holds it, and renews it until Unlock.
// A node that dies holding it loses it within certLockTTL.
func (c *CertStorage) Lock(ctx context.Context, name string) error {
	key := "certs." + certKey(name)
	// Each acquisition holds under a name of its own: two goroutines of
	// this node exclude each other as two nodes do.
	holder := fmt.Sprintf("%s/%d", c.Holder, c.seq.Add(1))
	for {
		if s := c.Fleet(); s != nil {
			// An error (a NATS hiccup) is retried as a held lock is.
			if ok, err := s.Lease(ctx, key, holder, certLockTTL); ok && err == nil {
				c.renew(name, key, holder)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// heldLock is a lock this node holds: its holder name, and what stops
// its renewal.
type heldLock struct {
	holder string
	stop   context.CancelFunc
}

// renew keeps lock name held until Unlock.
func (c *CertStorage) renew(name, key, holder string) {
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	if c.held == nil {
		c.held = map[string]heldLock{}
	}
	c.held[name] = heldLock{holder: holder, stop: cancel}
	c.mu.Unlock()
	c.group.Go(func() {
		t := time.NewTicker(certLockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s := c.Fleet(); s != nil {
					_, _ = s.Lease(ctx, key, holder, certLockTTL)
				}
			}
		}
	})
}

// Unlock releases lock name.
func (c *CertStorage) Unlock(ctx context.Context, name string) error {
	c.mu.Lock()
	h, ok := c.held[name]
	delete(c.held, name)
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("fleet: lock %s is not held here", name)
	}
	h.stop()
	s := c.Fleet()
	if s == nil {
		return errNotConnected
	}
	return s.Release(ctx, "certs."+certKey(name), h.holder)
}

// Close stops renewing the locks still held (they expire).
func (c *CertStorage) Close() {
	c.mu.Lock()
	for _, h := range c.held {
		h.stop()
	}
	c.held = nil
	c.mu.Unlock()
	c.group.Wait()
}
