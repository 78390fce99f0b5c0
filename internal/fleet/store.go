package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NodeTTL is how long a node's heartbeat lives: a node that stops writing
// disappears from ep-nodes this long after its last beat, and counts as
// gone for the nodes that watch.
const NodeTTL = 15 * time.Second

// Store reads and writes the fleet's buckets. Its methods are what the
// CLI and the workers use; edges only watch (Watcher).
type Store struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu  sync.Mutex
	kvs map[string]jetstream.KeyValue
}

// NewStore opens the fleet's buckets over nc.
func NewStore(nc *nats.Conn) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Store{nc: nc, js: js, kvs: map[string]jetstream.KeyValue{}}, nil
}

// Conn is the connection the store uses.
func (s *Store) Conn() *nats.Conn { return s.nc }

// bucket opens (creating it if needed) a bucket. Creating is idempotent,
// so any node may be first.
func (s *Store) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	s.mu.Lock()
	kv := s.kvs[name]
	s.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	cfg := jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage}
	if name == BucketNodes {
		cfg.TTL = NodeTTL
	}
	kv, err := s.js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	s.mu.Lock()
	s.kvs[name] = kv
	s.mu.Unlock()
	return kv, nil
}

func (s *Store) put(ctx context.Context, bucket, key string, v any) (uint64, error) {
	kv, err := s.bucket(ctx, bucket)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return kv.Put(ctx, key, b)
}

// PutApp writes an app record.
func (s *Store) PutApp(ctx context.Context, a *AppRecord) error {
	a.Schema, a.Updated = Schema, time.Now().UTC()
	_, err := s.put(ctx, BucketApps, a.Name, a)
	return err
}

// DeleteApp removes an app record (its machines are removed one by one).
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	kv, err := s.bucket(ctx, BucketApps)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, name); err != nil {
		return err
	}
	if kv, err := s.bucket(ctx, BucketSummary); err == nil {
		kv.Delete(ctx, name)
	}
	return nil
}

// PutMachine writes a machine record and the app's summary for its region.
func (s *Store) PutMachine(ctx context.Context, m *MachineRecord) error {
	m.Schema, m.Updated = Schema, time.Now().UTC()
	m.Version++
	if _, err := s.put(ctx, MachineBucket(m.Region), MachineKey(m.App, m.ID), m); err != nil {
		return err
	}
	return s.summarize(ctx, m.App, m.Region)
}

// DeleteMachine removes a machine record.
func (s *Store) DeleteMachine(ctx context.Context, region, app, id string) error {
	kv, err := s.bucket(ctx, MachineBucket(region))
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, MachineKey(app, id)); err != nil {
		return err
	}
	return s.summarize(ctx, app, region)
}

// GetMachine finds a machine by id in any region.
func (s *Store) GetMachine(ctx context.Context, id string) (*MachineRecord, error) {
	all, err := s.Machines(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, m := range all {
		if m.ID == id {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no machine %q in the fleet", id)
}

// summarize recounts an app's machines in one region and writes that
// region's line of the app's summary, with compare-and-set so writers in
// other regions do not overwrite each other.
func (s *Store) summarize(ctx context.Context, app, region string) error {
	machines, err := s.machinesIn(ctx, region, app)
	if err != nil {
		return err
	}
	count := RegionCount{Machines: len(machines)}
	for _, m := range machines {
		if m.State == "started" {
			count.Started++
		}
	}
	kv, err := s.bucket(ctx, BucketSummary)
	if err != nil {
		return err
	}
	for range 10 {
		sum := &SummaryRecord{App: app, Regions: map[string]RegionCount{}}
		var rev uint64
		if e, err := kv.Get(ctx, app); err == nil {
			if old, err := DecodeSummary(app, e.Value()); err == nil {
				sum = old
			}
			rev = e.Revision()
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		if count.Machines == 0 {
			delete(sum.Regions, region)
		} else {
			sum.Regions[region] = count
		}
		sum.Schema, sum.Updated = Schema, time.Now().UTC()
		b, _ := json.Marshal(sum)
		if rev == 0 {
			_, err = kv.Create(ctx, app, b)
		} else {
			_, err = kv.Update(ctx, app, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !strings.Contains(err.Error(), "wrong last sequence") {
			return err
		}
	}
	return fmt.Errorf("summary of %s: too many concurrent writers", app)
}

// machinesIn lists a region's machines, of one app or all ("").
func (s *Store) machinesIn(ctx context.Context, region, app string) ([]*MachineRecord, error) {
	kv, err := s.bucket(ctx, MachineBucket(region))
	if err != nil {
		return nil, err
	}
	filter := ">"
	if app != "" {
		filter = app + ".*"
	}
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var out []*MachineRecord
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if m, err := DecodeMachine(region, e.Key(), e.Value()); err == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// Regions lists the regions that have a machine bucket.
func (s *Store) Regions(ctx context.Context) ([]string, error) {
	l := s.js.KeyValueStoreNames(ctx)
	var out []string
	for name := range l.Name() {
		if r, ok := strings.CutPrefix(name, "KV_"+machineBucketPrefix); ok {
			out = append(out, r)
		} else if r, ok := strings.CutPrefix(name, machineBucketPrefix); ok {
			out = append(out, r)
		}
	}
	return out, l.Error()
}

// Machines lists the machines of one region, or of all ("").
func (s *Store) Machines(ctx context.Context, region string) ([]*MachineRecord, error) {
	regions := []string{region}
	if region == "" {
		var err error
		if regions, err = s.Regions(ctx); err != nil {
			return nil, err
		}
	}
	var out []*MachineRecord
	for _, r := range regions {
		ms, err := s.machinesIn(ctx, r, "")
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

// Apps lists the app records.
func (s *Store) Apps(ctx context.Context) ([]*AppRecord, error) {
	var out []*AppRecord
	err := s.each(ctx, BucketApps, func(key string, b []byte) {
		if a, err := DecodeApp(key, b); err == nil {
			out = append(out, a)
		}
	})
	return out, err
}

// Nodes lists the nodes whose heartbeat is alive.
func (s *Store) Nodes(ctx context.Context) ([]*NodeRecord, error) {
	var out []*NodeRecord
	err := s.each(ctx, BucketNodes, func(key string, b []byte) {
		if n, err := DecodeNode(key, b); err == nil {
			out = append(out, n)
		}
	})
	return out, err
}

// Heartbeat writes this node's record; call it more often than NodeTTL.
func (s *Store) Heartbeat(ctx context.Context, n *NodeRecord) error {
	n.Schema, n.Heartbeat = Schema, time.Now().UTC()
	_, err := s.put(ctx, BucketNodes, n.Name, n)
	return err
}

func (s *Store) each(ctx context.Context, bucket string, fn func(key string, b []byte)) error {
	kv, err := s.bucket(ctx, bucket)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			return nil
		}
		fn(e.Key(), e.Value())
	}
	return ctx.Err()
}
