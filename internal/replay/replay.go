// Package replay owns the fly-replay vocabulary: the instruction a machine
// returns to have its request sent elsewhere (header and JSON forms), the
// fly-replay-src header the proxy adds to the replayed request, the reasons
// it reports in fly-replay-failed, and the budget that decides whether a
// request may be replayed at all. It does no I/O: the HTTP proxy buffers,
// routes and forwards; this package only reads and checks what machines
// wrote, so a malformed or hostile header can never reach routing.
//
// The grammar, limits and every choice the reference leaves open are
// written down in docs/replay.md.
package replay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

const (
	// MaxReplays is how many replays one client request may go through.
	// A chain longer than this is almost always two machines replaying to
	// each other; past it the proxy answers PA02 instead of looping.
	MaxReplays = 10

	// MaxBufferedBody is the largest request body the proxy keeps so it
	// can send it again. Larger bodies are streamed once and cannot be
	// replayed (PA01).
	MaxBufferedBody = 1 << 20

	// MaxHeaderLen bounds fly-replay and fly-replay-src values.
	MaxHeaderLen = 4 << 10
	// MaxJSONLen bounds the body of an application/vnd.fly.replay+json answer.
	MaxJSONLen = 64 << 10
	// MaxRegions bounds the preference list; more than a handful of regions
	// is a mistake, and each one costs the balancer a lookup.
	MaxRegions = 16
	// MaxStateLen bounds the opaque state that rides along in fly-replay-src.
	MaxStateLen = 1 << 10
	// MaxTimeout bounds timeout=. A waiting replay pins a buffered body of
	// up to MaxBufferedBody, so a machine must not be able to hold it for
	// longer than the proxy would hold any other request in its queue.
	MaxTimeout = time.Minute

	maxRegionLen   = 32 // region codes are short; the bound keeps logs sane
	maxAppLen      = 63 // app names become DNS labels
	maxInstanceLen = 64 // machine ids are 14 hex digits today; leave room
)

// JSONContentType marks a response body that carries the instruction.
const JSONContentType = "application/vnd.fly.replay+json"

// Errors are wrapped with the offending key so the proxy can log a precise
// message while still branching with errors.Is.
var (
	ErrTooLong       = errors.New("replay: value too long")
	ErrSyntax        = errors.New("replay: malformed")
	ErrDuplicateKey  = errors.New("replay: duplicate key")
	ErrEmptyValue    = errors.New("replay: empty value")
	ErrInvalidValue  = errors.New("replay: invalid value")
	ErrTooManyRegion = errors.New("replay: too many regions")
	ErrConflict      = errors.New("replay: conflicting fields")
	ErrNoTarget      = errors.New("replay: no target")

	ErrBodyTooLarge   = errors.New("replay: body larger than the replay buffer")
	ErrTooManyReplays = errors.New("replay: too many replays in chain")
)

// Fallback says where the request goes when the replay fails. The zero
// value means nowhere: the client gets the error.
type Fallback uint8

const (
	FallbackNone Fallback = iota
	// FallbackPreferSelf sends the request back to the replaying machine
	// if it can still take it, otherwise to any machine of the original
	// app chosen by the balancer as usual.
	FallbackPreferSelf
	// FallbackForceSelf sends the request back to the replaying machine
	// and nowhere else; if that fails too, the client gets the error.
	FallbackForceSelf
)

func (f Fallback) String() string {
	switch f {
	case FallbackNone:
		return ""
	case FallbackPreferSelf:
		return "prefer_self"
	case FallbackForceSelf:
		return "force_self"
	}
	return fmt.Sprintf("Fallback(%d)", uint8(f))
}

func parseFallback(v string) (Fallback, error) {
	switch strings.ToLower(v) {
	case "prefer_self":
		return FallbackPreferSelf, nil
	case "force_self":
		return FallbackForceSelf, nil
	}
	return 0, fmt.Errorf("%w: fallback %q: want prefer_self or force_self", ErrInvalidValue, clip(v))
}

// Instruction is a machine's request to replay the request elsewhere.
type Instruction struct {
	Regions        []string      // region=iad,ord, in order of preference
	Instance       string        // instance=ID: that machine and no other
	PreferInstance string        // prefer_instance=ID: that machine if it can, else as routed
	App            string        // app=NAME: another app behind the same proxy
	State          string        // state=opaque, handed back in fly-replay-src
	Elsewhere      bool          // elsewhere=true: never the replaying machine
	Timeout        time.Duration // timeout=5s: how long to try before giving up
	Fallback       Fallback      // fallback=prefer_self|force_self

	// Unknown lists keys the parser did not recognise, lowercased, in the
	// order seen. They are ignored so machines written against a newer
	// proxy still work here; the proxy logs them. Unknown is not part of
	// the instruction: Validate and String do not look at it.
	Unknown []string
}

// Validate checks every field's syntax and bounds and the combinations
// that cannot mean anything. Both parsers call it, so it is the one place
// that says what an instruction may be; a valid instruction always
// renders, through String, to a header that parses back to it.
func (i Instruction) Validate() error {
	if len(i.Regions) > MaxRegions {
		return fmt.Errorf("%w: %d, at most %d", ErrTooManyRegion, len(i.Regions), MaxRegions)
	}
	for n, r := range i.Regions {
		if err := checkRegion(r); err != nil {
			return err
		}
		// Parsers drop repeats; a repeat here came from a caller and would
		// not survive a round trip through String, so refuse it.
		if slices.Contains(i.Regions[:n], r) {
			return fmt.Errorf("%w: region %q listed twice", ErrInvalidValue, r)
		}
	}
	if i.Instance != "" {
		if err := checkInstance("instance", i.Instance); err != nil {
			return err
		}
	}
	if i.PreferInstance != "" {
		if err := checkInstance("prefer_instance", i.PreferInstance); err != nil {
			return err
		}
	}
	if i.App != "" {
		if err := checkName("app", i.App, maxAppLen); err != nil {
			return err
		}
	}
	if i.State != "" {
		if err := checkState(i.State); err != nil {
			return err
		}
	}
	if i.Timeout < 0 || i.Timeout > MaxTimeout {
		return fmt.Errorf("%w: timeout %v: want above 0 and at most %v", ErrInvalidValue, i.Timeout, MaxTimeout)
	}
	if i.Fallback > FallbackForceSelf {
		return fmt.Errorf("%w: fallback %d", ErrInvalidValue, i.Fallback)
	}
	return i.checkCombination()
}

// checkCombination refuses pairs of fields where one makes the other
// either meaningless or impossible, rather than silently picking a winner
// the machine's author did not expect.
func (i Instruction) checkCombination() error {
	if i.Instance != "" {
		switch {
		case i.PreferInstance != "":
			return fmt.Errorf("%w: instance forces a machine, prefer_instance only prefers one", ErrConflict)
		case i.Elsewhere:
			// Either redundant or, if the instance is the replaying
			// machine, impossible; both are bugs worth surfacing.
			return fmt.Errorf("%w: instance names the machine, elsewhere has nothing to exclude", ErrConflict)
		case len(i.Regions) > 0:
			// A machine lives in exactly one region: the list can only
			// agree with it or contradict it.
			return fmt.Errorf("%w: instance fixes the region, region= cannot change it", ErrConflict)
		}
	}
	if len(i.Regions) == 0 && i.Instance == "" && i.PreferInstance == "" && i.App == "" && !i.Elsewhere {
		// Replaying to "anywhere in this app, myself included" can land on
		// the same machine and loop until MaxReplays.
		return fmt.Errorf("%w: need region, instance, prefer_instance, app or elsewhere=true", ErrNoTarget)
	}
	return nil
}

// String renders the canonical header form: known keys in a fixed order,
// no spaces, defaults omitted. It does not validate; render only valid
// instructions.
func (i Instruction) String() string {
	var b strings.Builder
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	if len(i.Regions) > 0 {
		add("region", strings.Join(i.Regions, ","))
	}
	if i.Instance != "" {
		add("instance", i.Instance)
	}
	if i.PreferInstance != "" {
		add("prefer_instance", i.PreferInstance)
	}
	if i.App != "" {
		add("app", i.App)
	}
	if i.Elsewhere {
		add("elsewhere", "true")
	}
	if i.Timeout != 0 {
		// Duration.String spells microseconds "µs", which is not ASCII and
		// so not a header value; ParseDuration reads "us" just the same.
		add("timeout", strings.ReplaceAll(i.Timeout.String(), "µs", "us"))
	}
	if i.Fallback != FallbackNone {
		add("fallback", i.Fallback.String())
	}
	if i.State != "" {
		add("state", i.State)
	}
	return b.String()
}

// CheckBudget decides whether a request may be replayed once more: done is
// how many replays it has already been through, body how many body bytes
// the proxy had to buffer (or saw before giving up buffering). The proxy
// maps ErrBodyTooLarge to PA01 and ErrTooManyReplays to PA02.
func CheckBudget(done int, body int64) error {
	if body > MaxBufferedBody {
		return fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, MaxBufferedBody)
	}
	if done >= MaxReplays {
		return fmt.Errorf("%w: %d already, at most %d", ErrTooManyReplays, done, MaxReplays)
	}
	return nil
}
