package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/replay"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// Routing headers a client may send (docs/config.md, Routing headers).
const (
	hdrPreferRegion    = "Fly-Prefer-Region"
	hdrForceRegion     = "Fly-Force-Region"
	hdrPreferInstance  = "Fly-Prefer-Instance-Id"
	hdrForceInstance   = "Fly-Force-Instance-Id"
	hdrPreferredGone   = "Fly-Preferred-Instance-Unavailable"
	hdrReplay          = "Fly-Replay"
	hdrReplaySrc       = "Fly-Replay-Src"
	hdrReplayFailed    = "Fly-Replay-Failed"
	DebugRoutingHeader = "Edgeproxy-Route"
)

// routingWant reads the client's routing headers. A malformed value is the
// client's error (PH01), never a silent "route anywhere".
func routingWant(h *h1.Head, w *upstream.Want) error {
	force, prefer := headerString(h, hdrForceRegion), headerString(h, hdrPreferRegion)
	if force != "" || prefer != "" {
		v := prefer
		if force != "" {
			v, w.ForceRegion = force, true
		}
		in, err := replay.ParseHeader("region=" + v)
		if err != nil {
			return perr.New(perr.MalformedRequest, fmt.Errorf("routing header: %w", err))
		}
		w.Regions = in.Regions
	}
	forceID, preferID := headerString(h, hdrForceInstance), headerString(h, hdrPreferInstance)
	if forceID != "" || preferID != "" {
		v := preferID
		if forceID != "" {
			v, w.ForceInstance = forceID, true
		}
		in, err := replay.ParseHeader("instance=" + v)
		if err != nil {
			return perr.New(perr.MalformedRequest, fmt.Errorf("routing header: %w", err))
		}
		w.Instance = in.Instance
	}
	return nil
}

// headerString is the first value of a field, "" when absent. Routing
// headers are rare: most requests never allocate here.
func headerString(h *h1.Head, name string) string {
	if v, ok := h.Get(name); ok {
		return string(v)
	}
	return ""
}

// fallback is where a replayed request goes if the replay fails.
type fallback struct {
	entry *catalog.Port
	want  *upstream.Want
}

// follow is the response phase's loop: it forwards the request and
// follows the machines' fly-replay instructions. Each replaying response
// is swallowed and the request sent again where the instruction says, at
// most replay.MaxReplays times, with the body recorded on the way.
func (h *Handler) follow(x *Exchange) (*upResponse, error) {
	entry := x.entry()
	want := &x.want
	acquire := x.Ctx
	var limit replayTimer
	defer limit.stop()
	var fb *fallback
	for hops := 0; ; {
		resp, err := h.forward(acquire, x, entry, want)
		if err != nil {
			if hops == 0 || x.ended() {
				return nil, err
			}
			reason := replayFailure(acquire, err)
			if fb == nil {
				x.countReplay(x.app(), "failed")
				return nil, replayError(acquire, err)
			}
			// The replay failed: the request goes to the fallback, which
			// is told why.
			x.countReplay(x.app(), "fallback")
			x.replayFailed = string(reason)
			entry, want, fb = fb.entry, fb.want, nil
			acquire = limit.reset(x.Ctx, 0)
			continue
		}
		fb = nil
		ins, ok, err := instruction(resp)
		if err != nil {
			// Replaying on a guess is worse than passing the answer on:
			// the client gets the machine's response, the operator a log
			// line (docs/replay.md).
			x.countReplay(x.app(), "invalid")
			if x.env.Log != nil {
				x.env.Log.Warn("invalid fly-replay ignored", "app", x.app(), "machine", x.target.lease.Machine.ID,
					"request_id", x.ID(), "error", err.Error())
			}
			x.dropReplayHeader = true
			return resp, nil
		}
		if !ok {
			return resp, nil
		}
		from := x.target.lease.Machine
		src := replay.Src{Instance: from.ID, Region: from.Region, State: ins.State, T: time.Now()}
		drain(x, resp)
		if x.env.Log != nil && len(ins.Unknown) > 0 {
			x.env.Log.Info("fly-replay has unknown keys", "app", x.app(), "machine", from.ID, "keys", strings.Join(ins.Unknown, ","))
		}
		var size int64
		if x.body != nil {
			size = x.body.Size()
			if !x.body.Replayable() {
				size = replay.MaxBufferedBody + 1
			}
		}
		if err := replay.CheckBudget(hops, size); err != nil {
			x.countReplay(x.app(), "failed")
			if errors.Is(err, replay.ErrBodyTooLarge) {
				return nil, perr.New(perr.ReplayBodyTooLarge, err)
			}
			return nil, perr.New(perr.TooManyReplays, err)
		}
		hops++
		origin := entry
		if ins.App != "" {
			entry = appEntry(x, ins.App, entry)
			if entry == nil {
				entry = origin
				x.countReplay(origin.Service.App.Name, "failed")
				err := perr.New(perr.NoHealthyInstances, fmt.Errorf("fly-replay: no app %q behind this proxy", ins.App))
				if ins.Fallback == replay.FallbackNone {
					return nil, err
				}
				x.replayFailed = string(replay.NoCandidate)
				want = selfWant(from, ins.Fallback, want.Explain)
				continue
			}
		}
		next := &upstream.Want{Regions: ins.Regions, ForceRegion: len(ins.Regions) > 0, Explain: want.Explain}
		switch {
		case ins.Instance != "":
			next.Instance, next.ForceInstance = ins.Instance, true
		case ins.PreferInstance != "":
			next.Instance = ins.PreferInstance
		}
		if ins.Elsewhere && entry.Service.App == origin.Service.App {
			next.Exclude = []*catalog.Machine{from}
		}
		if ins.Fallback != replay.FallbackNone {
			fb = &fallback{entry: origin, want: selfWant(from, ins.Fallback, want.Explain)}
		}
		want = next
		x.finalWant = want
		acquire = limit.reset(x.Ctx, ins.Timeout)
		x.replaySrc = src.String()
		x.replayFailed = ""
		x.countReplay(origin.Service.App.Name, "replayed")
	}
}

// replayTimer bounds the search for a replay's machine by the
// instruction's timeout.
type replayTimer struct{ cancel context.CancelFunc }

// reset ends the previous bound and returns parent bounded by d (0: not
// bounded).
func (t *replayTimer) reset(parent context.Context, d time.Duration) context.Context {
	t.stop()
	if d <= 0 {
		return parent
	}
	ctx, cancel := context.WithTimeout(parent, d)
	t.cancel = cancel
	return ctx
}

func (t *replayTimer) stop() {
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
}

// selfWant sends a fallback back to the replaying machine: only there
// (force_self) or there if it can (prefer_self).
func selfWant(m *catalog.Machine, f replay.Fallback, explain bool) *upstream.Want {
	return &upstream.Want{Instance: m.ID, ForceInstance: f == replay.FallbackForceSelf, Explain: explain}
}

// appEntry finds where a request replayed to another app goes: that app's
// service on the same public port if it has one, else its first service
// that speaks HTTP.
func appEntry(x *Exchange, name string, cur *catalog.Port) *catalog.Port {
	if x.env.Catalog == nil {
		return nil
	}
	app := x.env.Catalog.App(name)
	if app == nil {
		return nil
	}
	var first *catalog.Port
	for _, svc := range app.Services {
		for _, p := range svc.Ports {
			if !p.Handlers.HTTP {
				continue
			}
			if p.Lo <= x.Conn.Port.Public && x.Conn.Port.Public <= p.Hi && p.Handlers.TLS == cur.Handlers.TLS {
				return p
			}
			if first == nil {
				first = p
			}
		}
	}
	return first
}

// instruction reads a replay instruction from a response: the fly-replay
// header, or a JSON body marked with its content type. ok is false for an
// ordinary response. A JSON body that is not an instruction is put back.
func instruction(r *upResponse) (ins replay.Instruction, ok bool, err error) {
	if r.Status == 101 {
		return ins, false, nil
	}
	h := r.Head
	if v, found := h.Get(hdrReplay); found {
		all := string(v)
		n := 0
		h.Values(hdrReplay, func(v []byte) {
			if n++; n > 1 {
				all += ";" + string(v)
			}
		})
		ins, err = replay.ParseHeader(all)
		if err != nil {
			return ins, false, err
		}
		return ins, true, nil
	}
	ct, _ := h.Get("Content-Type")
	// Most responses are not instructions: a prefix test spares them the
	// allocations of a full media type parse.
	if len(ct) < len(replay.JSONContentType) || !strings.EqualFold(string(ct[:len(replay.JSONContentType)]), replay.JSONContentType) {
		return ins, false, nil
	}
	if mt, _, perr := mime.ParseMediaType(string(ct)); perr != nil || mt != replay.JSONContentType {
		return ins, false, nil
	}
	// The body is read over the head's bytes: keep a copy of the head.
	keep := &h1.Head{}
	if _, err := h1.ParseResponse(bytes.Clone(h.Buf), keep, nil, h1.Limits{MaxHead: len(h.Buf) + 1}); err == nil {
		keep.ContentLength, keep.Chunked, keep.Close = h.ContentLength, h.Chunked, h.Close
		r.Head = keep
	}
	r.src.headDone()
	var b []byte
	var rerr error
	if r.Body != nil {
		b, rerr = io.ReadAll(io.LimitReader(r.Body, replay.MaxJSONLen+1))
	}
	if rerr == nil && len(b) > replay.MaxJSONLen {
		rerr = fmt.Errorf("replay body longer than %d bytes", replay.MaxJSONLen)
	}
	if rerr == nil {
		ins, rerr = replay.ParseJSON(b)
	}
	if rerr != nil {
		if r.Body != nil {
			r.Body = io.MultiReader(bytes.NewReader(b), r.Body)
		}
		return ins, false, rerr
	}
	return ins, true, nil
}

// drain swallows a replaying response. Its body is read a little so the
// machine connection can be reused, then the attempt ends.
func drain(x *Exchange, r *upResponse) {
	r.src.headDone()
	clean := r.Body == nil
	if r.Body != nil {
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		clean = err == nil && n < 64<<10 && r.Length >= 0
		if clean {
			// The limit may have stopped short of the end.
			var one [1]byte
			m, err := r.Body.Read(one[:])
			clean = m == 0 && err == io.EOF
		}
	}
	x.endAttempt(r, clean)
}

// replayFailure names why a replay failed, for fly-replay-failed.
func replayFailure(ctx context.Context, err error) replay.Failure {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return replay.Timeout
	}
	if pe, ok := perr.As(err); ok {
		switch pe.Code {
		case perr.NoHealthyInstances, perr.NoCandidate:
			return replay.NoCandidate
		case perr.QueueTimeout, perr.NoCandidateTimeout:
			return replay.Timeout
		}
	}
	return replay.RetriesExhausted
}

// replayError is what the client gets when a replay without fallback
// fails: the failure itself, or PR04 when the instruction's timeout ran
// out first.
func replayError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return perr.New(perr.NoCandidateTimeout, fmt.Errorf("fly-replay timeout: %w", err))
	}
	return err
}

func (x *Exchange) countReplay(app, outcome string) {
	if m := x.env.Metrics; m != nil {
		m.Replays.WithLabelValues(app, outcome).Inc()
	}
}
