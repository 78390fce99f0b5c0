package telemetry

// The CPU tripwire of docs/incident.md. A spin like the incident's starts
// without warning, often at night, and a restart clears it: by the time a
// person pulls a profile by hand the evidence is gone. So the proxy
// watches its own CPU time and, when it stays high for a few seconds,
// profiles itself, the way Envoy's watchdog profile action does.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TripwireOptions configure StartTripwire. Zero values take the defaults
// of the [tripwire] config section, except Cooldown, where zero means none.
type TripwireOptions struct {
	// Threshold is the CPU use that counts as hot, as a share of
	// GOMAXPROCS: 0.8 is 80% of every P. Default 0.8.
	Threshold float64
	// Samples is how many consecutive intervals must all be hot. Default 3.
	Samples int
	// ProfileDuration is how long the CPU profile runs. Default 10s.
	ProfileDuration time.Duration
	// Dir receives the files, created with mode 0700 if missing. Default
	// edgeproxy-profiles under os.TempDir.
	Dir string
	// MaxFiles caps how many of the tripwire's files Dir keeps; the oldest
	// are removed first. Other files in Dir are left alone. Default 20.
	MaxFiles int
	// Cooldown is the least time from one capture to the next.
	Cooldown time.Duration
	// GOMAXPROCS is the CPU count Threshold is a share of. Zero reads
	// runtime.GOMAXPROCS at every sample, because the runtime lowers or
	// raises it when the container's CPU limit changes.
	GOMAXPROCS int
	// Log receives the line written per capture. Default: discard.
	Log *slog.Logger
	// OnTrip is called after every capture, on the tripwire's goroutine,
	// so the caller can count trips.
	OnTrip func(Trip)
	// Now is the clock for file names, the cooldown and the length of a
	// sample. Default time.Now.
	Now func() time.Time
	// ReadCPU returns the process's cumulative user and system CPU time.
	// Default: utime and stime from /proc/self/stat (Linux only; elsewhere
	// every read fails and the tripwire never fires).
	ReadCPU func() (user, system time.Duration, err error)
	// Interval is the length of one sample. Default 1s.
	Interval time.Duration
}

// Trip describes one capture.
type Trip struct {
	At time.Time
	// CPUShare is the CPU used over the hot samples as a share of
	// GOMAXPROCS (1 means every P busy the whole time).
	CPUShare float64
	// User and System are the CPU time used over the hot samples. A spin
	// like the incident's is nearly all user time; a flood of syscalls or
	// page faults shows as system time.
	User, System time.Duration
	// ProfilePath and GoroutinePath are the files written, empty when one
	// could not be.
	ProfilePath, GoroutinePath string
	// Err joins what went wrong while capturing.
	Err error
}

// Tripwire samples the process's CPU time until stopped.
type Tripwire struct {
	o      TripwireOptions
	prof   cpuProfiler
	cancel context.CancelFunc
	done   chan struct{}

	// Sampling state, owned by the tripwire's goroutine.
	window      []cpuReading // readings since the hot streak began, at most Samples+1
	lastCapture time.Time
	readFailing bool
}

type cpuReading struct {
	at           time.Time
	user, system time.Duration
}

// cpuProfiler is the process's one CPU profiler. Tests replace it: the
// runtime's profiler only wakes on real CPU samples, which a synctest
// bubble with virtual time never produces.
type cpuProfiler struct {
	start func(io.Writer) error
	stop  func()
}

// StartTripwire starts sampling every o.Interval until ctx is done or
// Stop is called.
func StartTripwire(ctx context.Context, o TripwireOptions) *Tripwire {
	return startTripwire(ctx, o, cpuProfiler{start: pprof.StartCPUProfile, stop: pprof.StopCPUProfile})
}

func startTripwire(ctx context.Context, o TripwireOptions, prof cpuProfiler) *Tripwire {
	ctx, cancel := context.WithCancel(ctx)
	t := &Tripwire{o: withTripwireDefaults(o), prof: prof, cancel: cancel, done: make(chan struct{})}
	go t.run(ctx)
	return t
}

// TripwireDir is where the tripwire writes its files for a configured
// dir ("": the default under os.TempDir).
func TripwireDir(dir string) string {
	return cmp.Or(dir, filepath.Join(os.TempDir(), "edgeproxy-profiles"))
}

func withTripwireDefaults(o TripwireOptions) TripwireOptions {
	if o.Threshold <= 0 {
		o.Threshold = 0.8
	}
	o.Samples = cmp.Or(max(o.Samples, 0), 3)
	o.ProfileDuration = cmp.Or(max(o.ProfileDuration, 0), 10*time.Second)
	o.Dir = TripwireDir(o.Dir)
	o.MaxFiles = cmp.Or(max(o.MaxFiles, 0), 20)
	o.Cooldown = max(o.Cooldown, 0)
	o.Interval = cmp.Or(max(o.Interval, 0), time.Second)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReadCPU == nil {
		o.ReadCPU = readProcessCPU
	}
	return o
}

// Stop ends sampling, cuts short a capture in progress (its CPU profile
// is still written, only shorter) and waits for both. It does nothing on
// a nil Tripwire, so a disabled tripwire needs no branch at shutdown.
func (t *Tripwire) Stop() {
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
}

func (t *Tripwire) run(ctx context.Context) {
	defer close(t.done)
	tick := time.NewTicker(t.o.Interval)
	defer tick.Stop()
	t.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		trip, ok := t.sample()
		if !ok {
			continue
		}
		trip = t.capture(ctx, trip)
		if t.o.OnTrip != nil {
			t.o.OnTrip(trip)
		}
		// The capture took ProfileDuration, and its own cost must not count
		// towards the next streak: start afresh from now.
		t.window = t.window[:0]
		t.sample()
		tick.Reset(t.o.Interval)
	}
}

// sample reads the CPU time once and reports a trip when the last
// Samples intervals were all hot and the cooldown has passed.
func (t *Tripwire) sample() (Trip, bool) {
	user, system, err := t.o.ReadCPU()
	now := t.o.Now()
	if err != nil {
		// A failed read breaks the streak. It is logged once per run of
		// failures: /proc can fail transiently (out of file descriptors is
		// the likeliest, during exactly the kind of storm that matters).
		t.window = t.window[:0]
		if !t.readFailing {
			t.o.Log.Warn("CPU tripwire cannot read the process's CPU time; it is blind until a read succeeds", "error", err.Error())
		}
		t.readFailing = true
		return Trip{}, false
	}
	t.readFailing = false
	r := cpuReading{at: now, user: user, system: system}
	if len(t.window) == 0 {
		t.window = append(t.window, r)
		return Trip{}, false
	}
	prev := t.window[len(t.window)-1]
	if !r.at.After(prev.at) {
		return Trip{}, false // a clock that did not move gives no share to judge
	}
	if cpuShare(prev, r, t.procs()) <= t.o.Threshold {
		t.window = append(t.window[:0], r)
		return Trip{}, false
	}
	t.window = append(t.window, r)
	if len(t.window) > t.o.Samples+1 {
		t.window = slices.Delete(t.window, 0, 1)
	}
	if len(t.window) <= t.o.Samples {
		return Trip{}, false
	}
	if !t.lastCapture.IsZero() && r.at.Sub(t.lastCapture) < t.o.Cooldown {
		return Trip{}, false
	}
	first := t.window[0]
	return Trip{At: now, CPUShare: cpuShare(first, r, t.procs()),
		User: r.user - first.user, System: r.system - first.system}, true
}

func (t *Tripwire) procs() int {
	if t.o.GOMAXPROCS > 0 {
		return t.o.GOMAXPROCS
	}
	return runtime.GOMAXPROCS(0)
}

// cpuShare is the CPU used between two readings as a share of procs CPUs.
func cpuShare(a, b cpuReading, procs int) float64 {
	used := (b.user + b.system) - (a.user + a.system)
	return float64(used) / (float64(b.at.Sub(a.at)) * float64(procs))
}

// stampLayout names files by the capture's UTC second; it sorts in time
// order, which pruning relies on.
const stampLayout = "20060102T150405Z"

// capture writes the goroutine dump and the CPU profile, prunes Dir and
// logs the trip. I/O errors end up in Trip.Err and the log, never in a
// panic: the process being profiled is the one serving traffic.
func (t *Tripwire) capture(ctx context.Context, trip Trip) Trip {
	t.lastCapture = trip.At
	dir, stamp := t.o.Dir, trip.At.UTC().Format(stampLayout)
	var errs []error
	if err := os.MkdirAll(dir, 0o700); err != nil {
		errs = append(errs, err)
	} else {
		// The goroutine dump comes first: it shows the moment of the trip
		// and survives a capture cut short.
		path := filepath.Join(dir, "goroutines-"+stamp+".txt")
		if err := writeCaptureFile(path, func(w io.Writer) error { return pprof.Lookup("goroutine").WriteTo(w, 2) }); err != nil {
			errs = append(errs, fmt.Errorf("goroutine dump: %w", err))
		} else {
			trip.GoroutinePath = path
		}
		path = filepath.Join(dir, "cpu-"+stamp+".pprof")
		if cut, err := t.profileCPU(ctx, path); err != nil {
			errs = append(errs, fmt.Errorf("cpu profile: %w", err))
		} else {
			trip.ProfilePath = path
			if cut {
				t.o.Log.Info("CPU tripwire: profile cut short by shutdown", "profile", path)
			}
		}
		if err := t.prune(); err != nil {
			errs = append(errs, fmt.Errorf("pruning %s: %w", dir, err))
		}
	}
	trip.Err = errors.Join(errs...)
	t.logTrip(trip)
	return trip
}

// profileCPU runs the CPU profiler into path for ProfileDuration, or
// until ctx is done (cut is then true; the profile is still valid).
func (t *Tripwire) profileCPU(ctx context.Context, path string) (cut bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	if err := t.prof.start(f); err != nil {
		// The runtime has one CPU profiler; most likely someone is pulling
		// /debug/pprof/profile right now. The goroutine dump still stands.
		f.Close()
		os.Remove(path)
		return false, err
	}
	t.o.Log.Debug("CPU tripwire: profiling", "duration", t.o.ProfileDuration.String(), "profile", path)
	timer := time.NewTimer(t.o.ProfileDuration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		cut = true
	}
	t.prof.stop()
	if err := f.Close(); err != nil {
		os.Remove(path)
		return false, err
	}
	return cut, nil
}

func writeCaptureFile(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// prune removes the oldest of the tripwire's files until MaxFiles remain.
func (t *Tripwire) prune() error {
	entries, err := os.ReadDir(t.o.Dir)
	if err != nil {
		return err
	}
	type file struct{ stamp, name string }
	var files []file
	for _, e := range entries {
		if stamp, ok := captureStamp(e.Name()); ok && e.Type().IsRegular() {
			files = append(files, file{stamp, e.Name()})
		}
	}
	// Oldest first; within one capture the goroutine dump goes before the
	// CPU profile, which cannot be taken again after the fact.
	slices.SortFunc(files, func(a, b file) int {
		return cmp.Or(strings.Compare(a.stamp, b.stamp), strings.Compare(b.name, a.name))
	})
	var errs []error
	for _, f := range files[:max(len(files)-t.o.MaxFiles, 0)] {
		if err := os.Remove(filepath.Join(t.o.Dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// captureStamp returns the time stamp of a file the tripwire wrote, and
// false for any other file, which pruning must never touch.
func captureStamp(name string) (string, bool) {
	for _, k := range [...]struct{ prefix, ext string }{{"cpu-", ".pprof"}, {"goroutines-", ".txt"}} {
		if s, ok := strings.CutPrefix(name, k.prefix); ok {
			if s, ok = strings.CutSuffix(s, k.ext); ok {
				_, err := time.Parse(stampLayout, s)
				return s, err == nil
			}
		}
	}
	return "", false
}

func (t *Tripwire) logTrip(trip Trip) {
	userShare := 0.0
	if total := trip.User + trip.System; total > 0 {
		userShare = float64(trip.User) / float64(total)
	}
	attrs := []any{"cpu_share", roundTo2(trip.CPUShare), "gomaxprocs", t.procs(), "samples", t.o.Samples,
		"user", trip.User.String(), "system", trip.System.String(), "user_share", roundTo2(userShare),
		"profile", trip.ProfilePath, "goroutines", trip.GoroutinePath}
	if trip.Err != nil {
		attrs = append(attrs, "error", trip.Err.Error())
	}
	t.o.Log.Warn("CPU tripwire fired: process CPU stayed above the threshold", attrs...)
}

func roundTo2(x float64) float64 { return math.Round(x*100) / 100 }

// clockTicks is USER_HZ, the unit of utime and stime in /proc/self/stat.
// Linux fixes it at 100 for userspace on every architecture Go runs on,
// and reading sysconf(_SC_CLK_TCK) would need cgo.
const clockTicks = 100

// readProcessCPU is the default ReadCPU. /proc/self/stat is read rather
// than getrusage so the package builds on every platform; its 10ms
// resolution is plenty for one-second samples.
func readProcessCPU() (user, system time.Duration, err error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(string(b))
}

// parseProcStat reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseProcStat(s string) (user, system time.Duration, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 63)
	if err != nil {
		return 0, 0, fmt.Errorf("proc stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 63)
	if err != nil {
		return 0, 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return fromClockTicks(ut), fromClockTicks(st), nil
}

func fromClockTicks(n uint64) time.Duration { return time.Duration(n) * (time.Second / clockTicks) }
