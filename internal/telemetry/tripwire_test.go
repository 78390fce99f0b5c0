package telemetry

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/pprof/profile"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Most tests run in a synctest bubble: the ticker and the clock are
// virtual, so a scripted CPU load gives exact shares and a ten-second
// cooldown costs nothing. The runtime's CPU profiler cannot run there (it
// waits on real CPU samples), so those tests use fakeProfiler; the tests
// at the end of the file use the real one in real time.

// scriptedCPU is a ReadCPU whose process used shares[i] of its CPUs
// during second i after start, and nothing once the script runs out; 90%
// of it is user time, as in a spin. Reads at the seconds in failAt fail.
type scriptedCPU struct {
	start  time.Time
	procs  int
	shares []float64
	failAt []time.Duration
}

func (c *scriptedCPU) read() (user, system time.Duration, err error) {
	elapsed := time.Since(c.start)
	if slices.Contains(c.failAt, elapsed) {
		return 0, 0, os.ErrPermission
	}
	var used time.Duration
	for i, s := range c.shares {
		in := min(max(elapsed-time.Duration(i)*time.Second, 0), time.Second)
		used += time.Duration(s * float64(c.procs) * float64(in))
	}
	user = used * 9 / 10
	return user, used - user, nil
}

// fakeProfiler stands in for the runtime's CPU profiler.
type fakeProfiler struct {
	mu      sync.Mutex
	running bool
	starts  int
	stops   int
}

func (p *fakeProfiler) profiler() cpuProfiler {
	return cpuProfiler{
		start: func(w io.Writer) error {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.running = true
			p.starts++
			_, err := io.WriteString(w, "fake profile")
			return err
		},
		stop: func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.running = false
			p.stops++
		},
	}
}

// logRecorder keeps every record and passes each message on to msgs
// (without blocking), so a test can wait for a line.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
	msgs chan string
}

func newLogRecorder() *logRecorder { return &logRecorder{msgs: make(chan string, 64)} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	select {
	case l.msgs <- r.Message:
	default:
	}
	return nil
}

// find returns the attributes of each record whose message starts with prefix.
func (l *logRecorder) find(prefix string) []map[string]slog.Value {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range l.recs {
		if strings.HasPrefix(r.Message, prefix) {
			attrs := map[string]slog.Value{}
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
			out = append(out, attrs)
		}
	}
	return out
}

// waitFor waits, in real time, for a log line starting with prefix.
func (l *logRecorder) waitFor(t *testing.T, prefix string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case m := <-l.msgs:
			if strings.HasPrefix(m, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("no log line %q within a minute", prefix)
		}
	}
}

const (
	firedMsg     = "CPU tripwire fired"
	profilingMsg = "CPU tripwire: profiling"
	readFailMsg  = "CPU tripwire cannot read"
)

// tripRecorder is an OnTrip that keeps every trip.
type tripRecorder struct {
	mu    sync.Mutex
	trips []Trip
	ch    chan Trip
}

func newTripRecorder() *tripRecorder { return &tripRecorder{ch: make(chan Trip, 16)} }

func (r *tripRecorder) onTrip(tr Trip) {
	r.mu.Lock()
	r.trips = append(r.trips, tr)
	r.mu.Unlock()
	select {
	case r.ch <- tr:
	default:
	}
}

func (r *tripRecorder) all() []Trip {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trips)
}

// await waits, in real time, for the next trip.
func (r *tripRecorder) await(t *testing.T) Trip {
	t.Helper()
	select {
	case tr := <-r.ch:
		return tr
	case <-time.After(time.Minute):
		t.Fatal("the tripwire did not fire within a minute")
		return Trip{}
	}
}

// bubbleRun is one tripwire run in virtual time.
type bubbleRun struct {
	start time.Time
	trips *tripRecorder
	log   *logRecorder
	prof  *fakeProfiler
}

// runInBubble starts a tripwire on cpu (with start set to now), lets it
// run for d of virtual time, stops it, and returns what it saw. Call it
// inside synctest.Test.
func runInBubble(t *testing.T, o TripwireOptions, cpu *scriptedCPU, d time.Duration) bubbleRun {
	t.Helper()
	r := bubbleRun{start: time.Now(), trips: newTripRecorder(), log: newLogRecorder(), prof: &fakeProfiler{}}
	cpu.start = r.start
	o.ReadCPU, o.OnTrip, o.Log = cpu.read, r.trips.onTrip, slog.New(r.log)
	tw := startTripwire(t.Context(), o, r.prof.profiler())
	time.Sleep(d)
	tw.Stop()
	return r
}

func (r bubbleRun) tripOffsets() []time.Duration {
	var out []time.Duration
	for _, tr := range r.trips.all() {
		out = append(out, tr.At.Sub(r.start))
	}
	return out
}

func repeatShare(share float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = share
	}
	return out
}

func TestTripwireNeedsSamplesConsecutiveHotIntervals(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name         string
		shares       []float64
		failAt       []time.Duration
		want         []time.Duration // trip times after start
		readWarnings int
	}{
		{name: "below the threshold", shares: repeatShare(0.45, 15)},
		{name: "at the threshold is not above it", shares: repeatShare(0.5, 15)},
		{name: "three hot seconds trip", shares: []float64{0.1, 0.9, 0.9, 0.9}, want: []time.Duration{4 * s}},
		{name: "two hot seconds do not", shares: []float64{0.9, 0.9, 0.1, 0.9, 0.9, 0.2, 1, 1}},
		{name: "a cool second restarts the count", shares: []float64{0.9, 0.9, 0.2, 0.9, 0.9, 0.9}, want: []time.Duration{6 * s}},
		{name: "a failed read restarts the count", shares: repeatShare(0.9, 7), failAt: []time.Duration{2 * s},
			want: []time.Duration{6 * s}, readWarnings: 1},
		{name: "a run of failed reads is logged once", shares: repeatShare(0.9, 8), failAt: []time.Duration{2 * s, 3 * s},
			want: []time.Duration{7 * s}, readWarnings: 1},
		{name: "each run of failed reads is logged", shares: repeatShare(0.1, 8), failAt: []time.Duration{2 * s, 5 * s},
			readWarnings: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := TripwireOptions{Threshold: 0.5, Samples: 3, GOMAXPROCS: 2, Interval: s, ProfileDuration: 2 * s,
					Cooldown: time.Hour, Dir: t.TempDir()}
				r := runInBubble(t, o, &scriptedCPU{procs: 2, shares: tc.shares, failAt: tc.failAt}, 20*s+s/2)
				if got := r.tripOffsets(); !slices.Equal(got, tc.want) {
					t.Errorf("trips at %v, want %v", got, tc.want)
				}
				if got := len(r.log.find(readFailMsg)); got != tc.readWarnings {
					t.Errorf("%d read-failure warnings, want %d", got, tc.readWarnings)
				}
			})
		})
	}
}

func TestTripwireCapture(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "profiles") // created by the tripwire
		o := TripwireOptions{Threshold: 0.5, Samples: 3, GOMAXPROCS: 2, Interval: time.Second,
			ProfileDuration: 2 * time.Second, Cooldown: time.Hour, Dir: dir}
		r := runInBubble(t, o, &scriptedCPU{procs: 2, shares: []float64{0.1, 0.9, 0.9, 0.9}}, 10*time.Second)

		trips := r.trips.all()
		if len(trips) != 1 {
			t.Fatalf("%d trips, want 1", len(trips))
		}
		tr := trips[0]
		// 0.9 of two CPUs for three seconds, 90% of it user time.
		if tr.CPUShare != 0.9 || tr.User != 4860*time.Millisecond || tr.System != 540*time.Millisecond || tr.Err != nil {
			t.Errorf("trip = share %v, user %v, system %v, err %v; want 0.9, 4.86s, 540ms, nil",
				tr.CPUShare, tr.User, tr.System, tr.Err)
		}
		stamp := r.start.Add(4 * time.Second).UTC().Format("20060102T150405Z")
		if want := filepath.Join(dir, "cpu-"+stamp+".pprof"); tr.ProfilePath != want {
			t.Errorf("ProfilePath = %q, want %q", tr.ProfilePath, want)
		}
		if want := filepath.Join(dir, "goroutines-"+stamp+".txt"); tr.GoroutinePath != want {
			t.Errorf("GoroutinePath = %q, want %q", tr.GoroutinePath, want)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("dir: %v, %v; want mode 0700", fi, err)
		}
		if b, err := os.ReadFile(tr.ProfilePath); err != nil || string(b) != "fake profile" {
			t.Errorf("profile file: %q, %v", b, err)
		}
		if r.prof.starts != 1 || r.prof.stops != 1 {
			t.Errorf("profiler started %d and stopped %d times, want 1 and 1", r.prof.starts, r.prof.stops)
		}
		// The dump has every goroutine's full stack, this test's included.
		dump, err := os.ReadFile(tr.GoroutinePath)
		if err != nil || !bytes.Contains(dump, []byte("goroutine ")) || !bytes.Contains(dump, []byte("TestTripwireCapture")) {
			t.Errorf("goroutine dump lacks this test's goroutine (err %v):\n%.2000s", err, dump)
		}

		lines := r.log.find(firedMsg)
		if len(lines) != 1 {
			t.Fatalf("%d %q lines, want 1", len(lines), firedMsg)
		}
		l := lines[0]
		for key, want := range map[string]string{"cpu_share": "0.9", "user": "4.86s", "system": "540ms",
			"user_share": "0.9", "gomaxprocs": "2", "profile": tr.ProfilePath, "goroutines": tr.GoroutinePath} {
			if got := l[key].String(); got != want {
				t.Errorf("log %s = %q, want %q", key, got, want)
			}
		}
		if _, ok := l["error"]; ok {
			t.Errorf("log has an error: %v", l["error"])
		}
	})
}

func TestTripwireCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Always hot. Trip at 2s; the capture ends at 4s and sampling
		// starts afresh; the streak is complete again at 6s but the
		// cooldown holds the next capture until 12s, and so on.
		o := TripwireOptions{Threshold: 0.5, Samples: 2, GOMAXPROCS: 2, Interval: time.Second,
			ProfileDuration: 2 * time.Second, Cooldown: 10 * time.Second, Dir: t.TempDir()}
		r := runInBubble(t, o, &scriptedCPU{procs: 2, shares: repeatShare(1, 60)}, 25500*time.Millisecond)
		want := []time.Duration{2 * time.Second, 12 * time.Second, 22 * time.Second}
		if got := r.tripOffsets(); !slices.Equal(got, want) {
			t.Errorf("trips at %v, want %v", got, want)
		}
	})
}

func TestTripwirePrunesToMaxFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		// A capture from an earlier run, which goes first, and files the
		// tripwire did not write, which stay.
		for _, name := range []string{"cpu-19991231T235959Z.pprof", "goroutines-19991231T235959Z.txt",
			"notes.txt", "cpu-latest.pprof"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// Hot all along with no cooldown: one capture every two seconds,
		// at 1s, 3s, 5s and 7s: eight files, plus the two old ones.
		o := TripwireOptions{Threshold: 0.5, Samples: 1, GOMAXPROCS: 1, Interval: time.Second,
			ProfileDuration: time.Second, MaxFiles: 5, Dir: dir}
		r := runInBubble(t, o, &scriptedCPU{procs: 1, shares: repeatShare(1, 60)}, 7500*time.Millisecond)
		if n := len(r.trips.all()); n != 4 {
			t.Fatalf("%d trips, want 4", n)
		}

		stamp := func(sec int) string {
			return r.start.Add(time.Duration(sec) * time.Second).UTC().Format("20060102T150405Z")
		}
		// The newest five: the odd one out is the goroutine dump of the
		// oldest capture kept, not its CPU profile.
		want := []string{"cpu-" + stamp(3) + ".pprof", "cpu-" + stamp(5) + ".pprof", "cpu-" + stamp(7) + ".pprof",
			"cpu-latest.pprof", "goroutines-" + stamp(5) + ".txt", "goroutines-" + stamp(7) + ".txt", "notes.txt"}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("dir holds\n%v\nwant\n%v", got, want)
		}
	})
}

func TestTripwireStopCutsCaptureShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		trips, prof := newTripRecorder(), &fakeProfiler{}
		log := newLogRecorder()
		start := time.Now()
		o := TripwireOptions{Threshold: 0.5, Samples: 1, GOMAXPROCS: 1, Interval: time.Second,
			ProfileDuration: time.Hour, Dir: t.TempDir(), OnTrip: trips.onTrip, Log: slog.New(log),
			ReadCPU: (&scriptedCPU{start: start, procs: 1, shares: repeatShare(1, 10)}).read}
		tw := startTripwire(t.Context(), o, prof.profiler())
		time.Sleep(5 * time.Second) // the capture started at 1s
		synctest.Wait()
		prof.mu.Lock()
		running := prof.running
		prof.mu.Unlock()
		if !running {
			t.Fatal("no capture in progress")
		}
		tw.Stop()
		if d := time.Since(start); d != 5*time.Second {
			t.Errorf("Stop returned %v after start; want it at once, at 5s", d)
		}
		if prof.running || prof.stops != 1 {
			t.Errorf("profiler running %v after %d stops; want stopped once", prof.running, prof.stops)
		}
		got := trips.all()
		if len(got) != 1 || got[0].ProfilePath == "" || got[0].Err != nil {
			t.Fatalf("trips = %+v; want one, keeping its shortened profile", got)
		}
		if len(log.find("CPU tripwire: profile cut short")) != 1 {
			t.Error("the cut was not logged")
		}
		tw.Stop() // a second Stop is harmless
	})
}

func TestTripwireSurvivesAnUnwritableDir(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		o := TripwireOptions{Threshold: 0.5, Samples: 1, GOMAXPROCS: 1, Interval: time.Second,
			ProfileDuration: time.Second, Dir: filepath.Join(file, "profiles")}
		// A failed capture takes no time: trips at 1s and 2s.
		r := runInBubble(t, o, &scriptedCPU{procs: 1, shares: repeatShare(1, 10)}, 2500*time.Millisecond)
		trips := r.trips.all()
		if len(trips) != 2 {
			t.Fatalf("%d trips, want 2: a failed capture must not stop the tripwire", len(trips))
		}
		for _, tr := range trips {
			if tr.Err == nil || tr.ProfilePath != "" || tr.GoroutinePath != "" {
				t.Errorf("trip = %+v; want an error and no files", tr)
			}
		}
		if lines := r.log.find(firedMsg); len(lines) != 2 || lines[0]["error"].String() == "" {
			t.Errorf("log lines %v; want two, with the error", lines)
		}
	})
}

func TestStopNilTripwire(t *testing.T) {
	var tw *Tripwire
	tw.Stop()
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name, line   string
		user, system time.Duration
		wantErr      bool
	}{
		{name: "plain", line: "4242 (edgeproxy) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 30 0 0 20 0 12 0 100 0 0\n",
			user: 2500 * time.Millisecond, system: 300 * time.Millisecond},
		{name: "command with spaces and parentheses",
			line: "4242 (a) b (c)) R 1 4242 4242 0 -1 4194560 1234 0 0 0 7 1 0 0 20 0 12 0 100 0 0\n",
			user: 70 * time.Millisecond, system: 10 * time.Millisecond},
		{name: "no command", line: "4242 S 1", wantErr: true},
		{name: "short", line: "4242 (edgeproxy) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250\n", wantErr: true},
		{name: "not a number", line: "4242 (edgeproxy) S 1 4242 4242 0 -1 4194560 1234 0 0 0 x 30 0\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			user, system, err := parseProcStat(tc.line)
			if (err != nil) != tc.wantErr || user != tc.user || system != tc.system {
				t.Errorf("parseProcStat = %v, %v, %v; want %v, %v, error %v", user, system, err, tc.user, tc.system, tc.wantErr)
			}
		})
	}
}

func TestReadProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/stat is Linux only")
	}
	if _, _, err := readProcessCPU(); err != nil {
		t.Fatal(err)
	}
}

// The tests below use the runtime's CPU profiler, which is one per
// process, in real time. They never run in parallel.

// hotCPU is a ReadCPU on which every interval is far above any threshold.
func hotCPU() func() (time.Duration, time.Duration, error) {
	var mu sync.Mutex
	var used time.Duration
	return func() (time.Duration, time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		used += time.Hour
		return used, 0, nil
	}
}

func TestTripwireStopCutsARealProfileShort(t *testing.T) {
	dir, trips, log := t.TempDir(), newTripRecorder(), newLogRecorder()
	tw := StartTripwire(t.Context(), TripwireOptions{Samples: 1, Interval: 10 * time.Millisecond,
		ProfileDuration: time.Hour, Dir: dir, OnTrip: trips.onTrip, Log: slog.New(log), ReadCPU: hotCPU()})
	t.Cleanup(tw.Stop)
	log.waitFor(t, profilingMsg)

	stopped := make(chan struct{})
	go func() { tw.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("Stop did not return within a minute of an hour-long capture")
	}
	tr := trips.await(t)
	f, err := os.Open(tr.ProfilePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := profile.Parse(f); err != nil {
		t.Errorf("the shortened profile does not parse: %v", err)
	}
}

func TestTripwireWithTheCPUProfilerBusy(t *testing.T) {
	// As if someone were pulling /debug/pprof/profile.
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		t.Skipf("cannot hold the CPU profiler for the test: %v", err)
	}
	defer pprof.StopCPUProfile()

	dir, trips := t.TempDir(), newTripRecorder()
	tw := StartTripwire(t.Context(), TripwireOptions{Samples: 1, Interval: 10 * time.Millisecond,
		ProfileDuration: time.Hour, Cooldown: time.Hour, Dir: dir, OnTrip: trips.onTrip, ReadCPU: hotCPU()})
	t.Cleanup(tw.Stop)
	tr := trips.await(t)
	tw.Stop()

	if tr.Err == nil || !strings.Contains(tr.Err.Error(), "cpu profile") || tr.ProfilePath != "" {
		t.Errorf("trip = %+v; want a cpu profile error and no profile", tr)
	}
	if _, err := os.Stat(tr.GoroutinePath); err != nil {
		t.Errorf("the goroutine dump is missing: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "cpu-*")); len(m) != 0 {
		t.Errorf("left behind %v", m)
	}
}

// spinForTripwireTest is the deliberately spinning goroutine: a loop that
// burns a CPU without making progress, as the incident's poll loop did.
// It is a named function so the profile can be checked for it.
//
//go:noinline
func spinForTripwireTest(stop <-chan struct{}) uint64 {
	var x uint64
	for {
		select {
		case <-stop:
			return x
		default:
		}
		for i := range uint64(1 << 22) {
			x = x*6364136223846793005 + i
		}
	}
}

// TestTripwireProfilesASpinningGoroutine is the end-to-end check of
// docs/incident.md's tripwire: real CPU time, the real profiler, and a profile
// whose hottest function is the spinner.
func TestTripwireProfilesASpinningGoroutine(t *testing.T) {
	if _, _, err := readProcessCPU(); err != nil {
		t.Skipf("the default CPU reader does not work here: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { _ = spinForTripwireTest(stop) })
	stopSpinner := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopSpinner()

	// The threshold is judged against one CPU, which the spinner fills on
	// its own, so the test behaves alike on a two-core runner and a
	// many-core workstation, and with other test binaries competing.
	dir, trips := t.TempDir(), newTripRecorder()
	tw := StartTripwire(t.Context(), TripwireOptions{Threshold: 0.3, GOMAXPROCS: 1, Samples: 2,
		Interval: 250 * time.Millisecond, ProfileDuration: 1500 * time.Millisecond, Cooldown: time.Hour,
		Dir: dir, OnTrip: trips.onTrip, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	t.Cleanup(tw.Stop)
	tr := trips.await(t)
	stopSpinner()
	tw.Stop()

	if tr.Err != nil {
		t.Fatalf("capture failed: %v", tr.Err)
	}
	t.Logf("trip: CPU %.2f of one CPU, user %v, system %v", tr.CPUShare, tr.User, tr.System)
	if tr.User <= tr.System {
		t.Errorf("user %v <= system %v; a spin is user time", tr.User, tr.System)
	}
	f, err := os.Open(tr.ProfilePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	top, flat, total := topFunction(p)
	t.Logf("top function %s: %d of %d samples", top, flat, total)
	if !strings.HasSuffix(top, ".spinForTripwireTest") {
		t.Errorf("top function is %s (%d of %d samples), want spinForTripwireTest", top, flat, total)
	}
}

// topFunction returns the function with the most flat samples: each
// sample's count goes to the innermost function of its leaf location.
func topFunction(p *profile.Profile) (name string, flat, total int64) {
	byFunc := map[string]int64{}
	for _, s := range p.Sample {
		total += s.Value[0]
		if len(s.Location) == 0 || len(s.Location[0].Line) == 0 || s.Location[0].Line[0].Function == nil {
			continue
		}
		byFunc[s.Location[0].Line[0].Function.Name] += s.Value[0]
	}
	for fn, n := range byFunc {
		if n > flat || (n == flat && fn < name) {
			name, flat = fn, n
		}
	}
	return name, flat, total
}
