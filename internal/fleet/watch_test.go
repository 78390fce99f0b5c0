package fleet

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// entry is a KV change as a watch delivers it.
type entry struct {
	bucket, key string
	value       []byte
	op          jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return e.bucket }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

func newTestWatcher() *Watcher {
	return &Watcher{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		apps: map[string]*AppRecord{}, nodes: map[string]*NodeRecord{},
		machines: map[string]map[string]*MachineRecord{}, byApp: map[string]map[string]*MachineRecord{},
		watching: map[string]bool{}, pending: map[string]bool{}, regionOf: map[string]string{},
		dirty: map[string]bool{}, allDirty: true}
}

func (w *Watcher) put(t *testing.T, bucket, region, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	w.take(context.Background(), event{bucket: bucket, region: region, entry: entry{bucket, key, b, jetstream.KeyValuePut}})
}

func (w *Watcher) del(bucket, region, key string) {
	w.take(context.Background(), event{bucket: bucket, region: region, entry: entry{bucket, key, nil, jetstream.KeyValueDelete}})
}

// TestWatcherCatalogChanges: the catalog names exactly the apps whose
// entries changed, rebuilds only those, never writes into a catalog it
// handed out, and hands the whole list (nil) when apps come or go.
func TestWatcherCatalogChanges(t *testing.T) {
	w := newTestWatcher()
	app := func(name string) *AppRecord {
		return &AppRecord{Schema: Schema, Name: name, Hostnames: []string{name + ".test"},
			HTTPService: &config.HTTPService{InternalPort: 8080}}
	}
	mach := func(app, id, state string) *MachineRecord {
		return &MachineRecord{Schema: Schema, ID: id, App: app, Region: "iad", Address: "10.0.0.1", State: state}
	}
	for _, n := range []string{"b", "a", "c"} {
		w.put(t, BucketApps, "", n, app(n))
	}
	w.put(t, MachineBucket("iad"), "iad", "a.m1", mach("a", "m1", "started"))
	first, changed, ok := w.catalog()
	if !ok || changed != nil || len(first) != 3 || first[0].Name != "a" || len(first[0].Machines) != 1 {
		t.Fatalf("first catalog: ok=%v changed=%v %+v", ok, changed, first)
	}
	if _, _, ok := w.catalog(); ok {
		t.Error("a catalog with nothing changed")
	}

	// Machine changes in two apps; a node record changes nothing.
	w.put(t, MachineBucket("iad"), "iad", "a.m1", mach("a", "m1", "stopped"))
	w.put(t, MachineBucket("iad"), "iad", "c.m2", mach("c", "m2", "started"))
	w.put(t, BucketNodes, "", "n1", &NodeRecord{Schema: Schema, Name: "n1", Role: "edge", Region: "iad"})
	second, changed, ok := w.catalog()
	if !ok || !slices.Equal(changed, []string{"a", "c"}) {
		t.Fatalf("changed %v, want [a c]", changed)
	}
	if second[0].Machines[0].State != "stopped" || len(second[2].Machines) != 1 {
		t.Errorf("changes not in the catalog: %+v", second)
	}
	if first[0].Machines[0].State != "started" || len(first[2].Machines) != 0 {
		t.Error("the catalog handed out before was written to")
	}
	if &second[1] == &first[1] {
		t.Error("the new catalog shares its array with the old one")
	}

	// A refused record changes nothing.
	w.take(context.Background(), event{bucket: MachineBucket("iad"), region: "iad",
		entry: entry{MachineBucket("iad"), "a.m1", []byte("junk"), jetstream.KeyValuePut}})
	if _, changed, ok := w.catalog(); ok {
		t.Errorf("a refused record changed %v", changed)
	}

	// A machine removed, then an app reconfigured: named as changes.
	w.del(MachineBucket("iad"), "iad", "c.m2")
	if _, changed, _ := w.catalog(); !slices.Equal(changed, []string{"c"}) {
		t.Errorf("removal: changed %v", changed)
	}
	b := app("b")
	b.Hostnames = []string{"other.test"}
	w.put(t, BucketApps, "", "b", b)
	if cat, changed, _ := w.catalog(); !slices.Equal(changed, []string{"b"}) || cat[1].Hostnames[0] != "other.test" {
		t.Errorf("app change: changed %v", changed)
	}

	// An app gone: the whole list.
	w.del(BucketApps, "", "a")
	if cat, changed, ok := w.catalog(); !ok || changed != nil || len(cat) != 2 {
		t.Errorf("app removed: ok=%v changed=%v len=%d", ok, changed, len(cat))
	}
	// Machines of an app the catalog does not have change nothing.
	w.put(t, MachineBucket("iad"), "iad", "zz.m9", mach("zz", "m9", "started"))
	if _, changed, ok := w.catalog(); ok {
		t.Errorf("an unknown app's machine changed %v", changed)
	}
}
