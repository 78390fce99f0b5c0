package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// coalesce is how long a burst of changes is gathered before the catalog
// is rebuilt: a thousand updates a second cost about twenty rebuilds.
const coalesce = 50 * time.Millisecond

// cacheEvery spaces the writes of the catalog cache: at ten thousand apps
// a write costs more than applying a change, and the cache only needs to
// be recent, not current.
const cacheEvery = 2 * time.Second

// initialWait bounds how long a starting edge waits for every watched
// bucket's current values before it applies what it has.
const initialWait = 3 * time.Second

// Counts are what a Watcher has done, for metrics.
type Counts interface {
	Update(bucket, result string) // result: applied or refused
}

// Watcher keeps this edge's copy of the fleet catalog: every app, the
// summary, and the machines of the regions it watches (all when regions
// is empty). Each change is checked on its own; a refused record leaves
// the previous good value of its key in place. Changes are gathered and
// handed to apply as a whole catalog, which the caller turns into a
// runtime exactly as a reload does. The last catalog applied is written
// to cacheFile, and read back at start, so an edge that starts while NATS
// is down serves at once.
type Watcher struct {
	Store     *Store
	Regions   []string
	Log       *slog.Logger
	Counts    Counts
	CacheFile string
	// Apply is handed every app of the catalog, sorted by name, and the
	// names of those that changed since the last call (nil: any may have,
	// as on the first call and when apps came or went).
	Apply func(apps []config.App, changed []string)
	// Resync, when signalled (the connection came back), restarts every
	// watch from the buckets' current values, instead of waiting for the
	// watches to notice on their own that their consumers are gone.
	Resync chan struct{}
	// Nodes, if set, is told the nodes' records (copies) after each
	// change: edges find workers' backhaul addresses there. A record
	// aged out of the bucket sends no event: read Seen for liveness.
	Nodes func(map[string]NodeRecord)

	events chan event
	// owned by Run's goroutine
	apps     map[string]*AppRecord
	nodes    map[string]*NodeRecord
	machines map[string]map[string]*MachineRecord // region → key → record
	byApp    map[string]map[string]*MachineRecord // app → region/key → record
	// What changed since the last catalog: the apps to rebuild, or all
	// of them when one came or went.
	dirty    map[string]bool
	allDirty bool
	built    []config.App      // the last catalog, sorted by name
	builtAt  map[string]int    // app → index in built
	watching map[string]bool   // buckets
	pending  map[string]bool   // buckets whose current values are not all in yet
	regionOf map[string]string // bucket → region, for restarts
	gen      int
	runCtx   context.Context
	wctx     context.Context
	wcancel  context.CancelFunc
	wg       sync.WaitGroup
}

type event struct {
	bucket, region string
	entry          jetstream.KeyValueEntry // nil: the bucket's current values are all in
	gen            int                     // the watches' generation: older ones are dropped
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	w.events = make(chan event, 1024)
	w.apps = map[string]*AppRecord{}
	w.nodes = map[string]*NodeRecord{}
	w.machines = map[string]map[string]*MachineRecord{}
	w.byApp = map[string]map[string]*MachineRecord{}
	w.dirty = map[string]bool{}
	w.allDirty = true
	w.watching = map[string]bool{}
	w.pending = map[string]bool{}
	w.regionOf = map[string]string{}
	w.runCtx = ctx
	w.wctx, w.wcancel = context.WithCancel(ctx)
	defer w.wg.Wait()
	defer func() { w.wcancel() }()
	if apps, ok := w.readCache(); ok {
		w.Log.Info("fleet catalog from cache", "file", w.CacheFile, "apps", len(apps))
		w.Apply(apps, nil)
	}
	w.watch(ctx, BucketApps, "")
	w.watch(ctx, BucketSummary, "")
	w.watch(ctx, BucketNodes, "")
	regions := w.Regions
	if len(regions) == 0 {
		found, err := w.Store.Regions(ctx)
		if err != nil {
			w.Log.Warn("fleet: listing regions", "error", err.Error())
		}
		regions = found
	}
	for _, r := range regions {
		w.watch(ctx, MachineBucket(r), r)
	}
	initial := time.NewTimer(initialWait)
	defer initial.Stop()
	synced := false
	var flush, cacheDue <-chan time.Time
	var lastApply, lastCache time.Time
	var cached []config.App
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.Resync:
			w.restart()
		case e := <-w.events:
			if e.gen != w.gen {
				continue // from a watch replaced since
			}
			w.take(ctx, e)
			if !synced && len(w.pending) == 0 {
				synced = true
				flush = time.After(0)
			} else if synced && flush == nil {
				// The first change after a quiet spell applies at once;
				// a burst is gathered, so rebuilds stay a few a second.
				flush = time.After(max(0, coalesce-time.Since(lastApply)))
			}
		case <-initial.C:
			if !synced {
				w.Log.Warn("fleet: applying the catalog before every bucket answered", "waiting_for", len(w.pending))
				synced = true
				flush = time.After(0)
			}
		case <-flush:
			flush = nil
			apps, changed, ok := w.catalog()
			if !ok {
				// Nodes or the summary only: nothing routes differently,
				// and the next change need not wait behind this one.
				break
			}
			lastApply = time.Now()
			w.Apply(apps, changed)
			cached = apps
			if cacheDue == nil {
				cacheDue = time.After(max(0, cacheEvery-time.Since(lastCache)))
			}
		case <-cacheDue:
			cacheDue = nil
			lastCache = time.Now()
			w.writeCache(cached)
		}
	}
}

// watch follows one bucket from its current values on, until the
// watches are restarted or ctx ends.
func (w *Watcher) watch(_ context.Context, bucket, region string) {
	if w.watching[bucket] {
		return
	}
	w.watching[bucket] = true
	w.regionOf[bucket] = region
	w.start(bucket, region)
}

// restart replaces every watch with a new one from current values.
func (w *Watcher) restart() {
	w.wcancel()
	w.wctx, w.wcancel = context.WithCancel(w.runCtx)
	w.gen++
	for bucket, region := range w.regionOf {
		w.start(bucket, region)
	}
}

func (w *Watcher) start(bucket, region string) {
	ctx, gen := w.wctx, w.gen
	w.pending[bucket] = true
	w.wg.Go(func() {
		for ctx.Err() == nil {
			kv, err := w.Store.bucket(ctx, bucket)
			var kw jetstream.KeyWatcher
			if err == nil {
				kw, err = kv.WatchAll(ctx)
			}
			if err != nil {
				w.Log.Warn("fleet: cannot watch bucket yet", "bucket", bucket, "error", err.Error())
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			for e := range kw.Updates() {
				select {
				case w.events <- event{bucket: bucket, region: region, entry: e, gen: gen}:
				case <-ctx.Done():
				}
			}
			kw.Stop()
		}
	})
}

// take applies one change to the copy.
func (w *Watcher) take(ctx context.Context, e event) {
	if e.entry == nil {
		delete(w.pending, e.bucket)
		return
	}
	key := e.entry.Key()
	deleted := e.entry.Operation() != jetstream.KeyValuePut
	var err error
	switch {
	case e.bucket == BucketApps && deleted:
		if w.apps[key] != nil {
			delete(w.apps, key)
			w.allDirty = true
		}
	case e.bucket == BucketApps:
		var a *AppRecord
		if a, err = DecodeApp(key, e.entry.Value()); err == nil {
			if w.apps[key] == nil {
				w.allDirty = true
			}
			w.apps[key] = a
			w.dirty[key] = true
		}
	case e.bucket == BucketNodes:
		if deleted {
			delete(w.nodes, key)
			w.tellNodes()
			break
		}
		var n *NodeRecord
		if n, err = DecodeNode(key, e.entry.Value()); err == nil {
			n.Seen = e.entry.Created()
			w.nodes[key] = n
			w.tellNodes()
		}
	case e.bucket == BucketSummary:
		if deleted {
			break
		}
		var s *SummaryRecord
		if s, err = DecodeSummary(key, e.entry.Value()); err == nil && len(w.Regions) == 0 {
			// A region seen for the first time gets watched.
			for r := range s.Regions {
				w.watch(ctx, MachineBucket(r), r)
			}
		}
	default:
		ms := w.machines[e.region]
		if ms == nil {
			ms = map[string]*MachineRecord{}
			w.machines[e.region] = ms
		}
		var m *MachineRecord
		if !deleted {
			if m, err = DecodeMachine(e.region, key, e.entry.Value()); err != nil {
				break
			}
		}
		w.placeMachine(e.region+"/"+key, ms[key], m)
		if m == nil {
			delete(ms, key)
		} else {
			ms[key] = m
		}
	}
	result := "applied"
	if err != nil {
		result = "refused"
		w.Log.Warn("fleet: record refused; the previous value stays", "bucket", e.bucket, "key", key, "error", err.Error())
	}
	if w.Counts != nil {
		w.Counts.Update(e.bucket, result)
	}
}

// placeMachine files machine record m (nil: removed), which replaces
// old (nil: new), under its app, and marks the apps it leaves and joins.
func (w *Watcher) placeMachine(key string, old, m *MachineRecord) {
	if old != nil {
		delete(w.byApp[old.App], key)
		w.dirty[old.App] = true
	}
	if m != nil {
		ms := w.byApp[m.App]
		if ms == nil {
			ms = map[string]*MachineRecord{}
			w.byApp[m.App] = ms
		}
		ms[key] = m
		w.dirty[m.App] = true
	}
}

// catalog is the copy as [[apps]] entries, every app with the machines
// of the watched regions, and the names of the apps changed since the
// last call (nil: the whole list is new). Only changed apps are built
// again; ok is false when no app changed at all.
func (w *Watcher) catalog() (apps []config.App, changed []string, ok bool) {
	defer clear(w.dirty)
	if w.allDirty || w.built == nil {
		w.allDirty = false
		names := make([]string, 0, len(w.apps))
		for n := range w.apps {
			names = append(names, n)
		}
		slices.Sort(names)
		w.built = make([]config.App, len(names))
		w.builtAt = make(map[string]int, len(names))
		for i, n := range names {
			w.built[i] = w.appConfig(n)
			w.builtAt[n] = i
		}
		return w.built, nil, true
	}
	next := w.built
	for n := range w.dirty {
		i, found := w.builtAt[n]
		if !found {
			continue // machines of an app the catalog does not have
		}
		if changed == nil {
			// Copy on first write: the last catalog is someone's runtime.
			next = slices.Clone(w.built)
		}
		next[i] = w.appConfig(n)
		changed = append(changed, n)
	}
	if changed == nil {
		return w.built, nil, false
	}
	slices.Sort(changed)
	w.built = next
	return next, changed, true
}

// appConfig is app name as an [[apps]] entry, its machines sorted by id.
func (w *Watcher) appConfig(name string) config.App {
	ms := make([]*MachineRecord, 0, len(w.byApp[name]))
	for _, m := range w.byApp[name] {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *MachineRecord) int { return strings.Compare(a.ID, b.ID) })
	return AppConfig(w.apps[name], ms)
}

// readCache loads the last catalog applied, if there is one.
func (w *Watcher) readCache() ([]config.App, bool) {
	apps, err := ReadCache(w.CacheFile)
	if err != nil && !os.IsNotExist(err) {
		w.Log.Warn("fleet: catalog cache unreadable, ignored", "file", w.CacheFile, "error", err.Error())
	}
	return apps, err == nil
}

// ReadCache reads the catalog a Watcher cached in file.
func ReadCache(file string) ([]config.App, error) {
	if file == "" {
		return nil, os.ErrNotExist
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var c struct {
		Schema int          `json:"schema"`
		Apps   []config.App `json:"apps"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if c.Schema != Schema {
		return nil, fmt.Errorf("cache schema %d, this node reads %d", c.Schema, Schema)
	}
	return c.Apps, nil
}

// writeCache replaces the cache file whole.
func (w *Watcher) writeCache(apps []config.App) {
	if w.CacheFile == "" {
		return
	}
	if err := WriteCache(w.CacheFile, apps); err != nil {
		w.Log.Warn("fleet: cannot write the catalog cache", "file", w.CacheFile, "error", err.Error())
	}
}

// WriteCache replaces file with apps as a catalog cache ReadCache reads:
// written to a file of its own, then renamed over, so a reader (or a
// process starting) never sees half of one and two writers never mix.
func WriteCache(file string, apps []config.App) error {
	b, err := json.Marshal(struct {
		Schema int          `json:"schema"`
		Apps   []config.App `json:"apps"`
	}{Schema, apps})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), file)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// tellNodes hands the node records to Nodes.
func (w *Watcher) tellNodes() {
	if w.Nodes == nil {
		return
	}
	out := make(map[string]NodeRecord, len(w.nodes))
	for k, n := range w.nodes {
		out[k] = *n
	}
	w.Nodes(out)
}
