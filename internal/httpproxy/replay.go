package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
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
func routingWant(h http.Header, w *upstream.Want) error {
	force, prefer := h.Get(hdrForceRegion), h.Get(hdrPreferRegion)
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
	forceID, preferID := h.Get(hdrForceInstance), h.Get(hdrPreferInstance)
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

// fallback is where a replayed request goes if the replay fails.
type fallback struct {
	entry *catalog.Port
	want  *upstream.Want
}

// serve forwards the request and follows the machines' fly-replay
// instructions: each replaying response is swallowed and the request is
// sent again where the instruction says, at most replay.MaxReplays times.
func (rt roundTripper) serve(req *http.Request, st *reqState, want *upstream.Want) (*http.Response, error) {
	entry := st.entry
	acquire := req.Context()
	var limit replayTimer
	defer limit.stop()
	var fb *fallback
	app := func() string { return entry.Service.App.Name }
	for hops := 0; ; {
		resp, err := rt.forward(acquire, req, st, entry, want)
		if err != nil {
			if hops == 0 || req.Context().Err() != nil {
				return nil, err
			}
			reason := replayFailure(acquire, err)
			if fb == nil {
				rt.countReplay(st, app(), "failed")
				return nil, replayError(acquire, err)
			}
			// The replay failed: the request goes to the fallback, which
			// is told why.
			rt.countReplay(st, app(), "fallback")
			req.Header.Set(hdrReplayFailed, string(reason))
			entry, want, fb = fb.entry, fb.want, nil
			acquire = limit.reset(req.Context(), 0)
			continue
		}
		fb = nil
		ins, ok, err := instruction(resp)
		if err != nil {
			// Replaying on a guess is worse than passing the answer on:
			// the client gets the machine's response, the operator a log
			// line (docs/replay.md).
			rt.countReplay(st, app(), "invalid")
			if st.env.Log != nil {
				st.env.Log.Warn("invalid fly-replay ignored", "app", app(), "machine", st.lease.Machine.ID,
					"request_id", st.id, "error", err.Error())
			}
			return rt.finish(resp, st, want), nil
		}
		if !ok {
			return rt.finish(resp, st, want), nil
		}
		from := st.lease.Machine
		src := replay.Src{Instance: from.ID, Region: from.Region, State: ins.State, T: time.Now()}
		drain(resp)
		if st.env.Log != nil && len(ins.Unknown) > 0 {
			st.env.Log.Info("fly-replay has unknown keys", "app", app(), "machine", from.ID, "keys", strings.Join(ins.Unknown, ","))
		}
		var size int64
		if st.body != nil {
			size = st.body.Size()
			if !st.body.Replayable() {
				size = replay.MaxBufferedBody + 1
			}
		}
		if err := replay.CheckBudget(hops, size); err != nil {
			rt.countReplay(st, app(), "failed")
			if errors.Is(err, replay.ErrBodyTooLarge) {
				return nil, perr.New(perr.ReplayBodyTooLarge, err)
			}
			return nil, perr.New(perr.TooManyReplays, err)
		}
		hops++
		origin := entry
		if ins.App != "" {
			entry = appEntry(st, ins.App, entry)
			if entry == nil {
				entry = origin
				rt.countReplay(st, app(), "failed")
				err := perr.New(perr.NoHealthyInstances, fmt.Errorf("fly-replay: no app %q behind this proxy", ins.App))
				if ins.Fallback == replay.FallbackNone {
					return nil, err
				}
				req.Header.Set(hdrReplayFailed, string(replay.NoCandidate))
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
		acquire = limit.reset(req.Context(), ins.Timeout)
		req.Header.Set(hdrReplaySrc, src.String())
		req.Header.Del(hdrReplayFailed)
		rt.countReplay(st, origin.Service.App.Name, "replayed")
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
func appEntry(st *reqState, name string, cur *catalog.Port) *catalog.Port {
	if st.env.Catalog == nil {
		return nil
	}
	app := st.env.Catalog.App(name)
	if app == nil {
		return nil
	}
	var first *catalog.Port
	for _, svc := range app.Services {
		for _, p := range svc.Ports {
			if !p.Handlers.HTTP {
				continue
			}
			if p.Lo <= st.conn.Port.Public && st.conn.Port.Public <= p.Hi && p.Handlers.TLS == cur.Handlers.TLS {
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
func instruction(resp *http.Response) (ins replay.Instruction, ok bool, err error) {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return ins, false, nil
	}
	if vs := resp.Header.Values(hdrReplay); len(vs) > 0 {
		ins, err = replay.ParseHeader(strings.Join(vs, ";"))
		if err != nil {
			resp.Header.Del(hdrReplay)
			return ins, false, err
		}
		return ins, true, nil
	}
	ct := resp.Header.Get("Content-Type")
	// Most responses are not instructions: a prefix test spares them the
	// allocations of a full media type parse.
	if len(ct) < len(replay.JSONContentType) || !strings.EqualFold(ct[:len(replay.JSONContentType)], replay.JSONContentType) {
		return ins, false, nil
	}
	if mt, _, perr := mime.ParseMediaType(ct); perr != nil || mt != replay.JSONContentType {
		return ins, false, nil
	}
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, replay.MaxJSONLen+1))
	if rerr == nil && len(b) > replay.MaxJSONLen {
		rerr = fmt.Errorf("replay body longer than %d bytes", replay.MaxJSONLen)
	}
	if rerr == nil {
		ins, rerr = replay.ParseJSON(b)
	}
	if rerr != nil {
		resp.Body = &rejoinedBody{Reader: io.MultiReader(bytes.NewReader(b), resp.Body), ReadCloser: resp.Body}
		return ins, false, rerr
	}
	return ins, true, nil
}

// rejoinedBody puts back the bytes read from a response body.
type rejoinedBody struct {
	io.Reader
	io.ReadCloser
}

func (b *rejoinedBody) Read(p []byte) (int, error) { return b.Reader.Read(p) }

// drain swallows a replaying response. Its body is read a little so the
// upstream connection can be reused, then closed (which releases the
// machine's unit).
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
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

func (rt roundTripper) countReplay(st *reqState, app, outcome string) {
	if m := st.env.Metrics; m != nil {
		m.Replays.WithLabelValues(app, outcome).Inc()
	}
}

// finish adds the routing facts a client asked for to the response that
// goes back: which preferred instance was unavailable, and the debug
// explanation.
func (rt roundTripper) finish(resp *http.Response, st *reqState, want *upstream.Want) *http.Response {
	l := st.lease
	if want.Instance != "" && !want.ForceInstance && l != nil && l.Machine.ID != want.Instance {
		resp.Header.Set(hdrPreferredGone, want.Instance)
	}
	if want.Explain && l != nil {
		switch {
		case st.pinned:
			// No decision was made for this request: say so, rather than
			// repeat the connection's first decision as if it were new.
			resp.Header.Set(DebugRoutingHeader, "machine="+l.Machine.ID+
				"; policy=pinned; why=concurrency type connections keeps a client connection on one machine while it is usable")
		case l.Explain != nil:
			v := l.Explain.String()
			if l.Started != "" {
				v = fmt.Sprintf("started %s (waited %d ms); %s", l.Started, l.StartWait.Milliseconds(), v)
			}
			resp.Header.Set(DebugRoutingHeader, v)
		}
	}
	return resp
}
