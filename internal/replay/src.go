package replay

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Src is the fly-replay-src header put on a replayed request, telling the
// target which machine replayed it, from where, when, and with what state.
type Src struct {
	Instance string    // the replaying machine
	Region   string    // its region
	State    string    // the instruction's state, verbatim
	T        time.Time // when the proxy received the instruction; microsecond precision on the wire
}

// String renders instance=..;region=..;t=<unix microseconds>;state=..,
// omitting empty fields and a zero T.
func (s Src) String() string {
	var parts []string
	if s.Instance != "" {
		parts = append(parts, "instance="+s.Instance)
	}
	if s.Region != "" {
		parts = append(parts, "region="+s.Region)
	}
	if !s.T.IsZero() {
		parts = append(parts, "t="+strconv.FormatInt(s.T.UnixMicro(), 10))
	}
	if s.State != "" {
		parts = append(parts, "state="+s.State)
	}
	return strings.Join(parts, ";")
}

// ParseSrc reads a fly-replay-src value. Every field is optional and
// unknown keys are ignored so that an app's parser, or a test, keeps
// working when the proxy adds a field. T comes back in UTC.
func ParseSrc(v string) (Src, error) {
	pairs, err := splitPairs(v)
	if err != nil {
		return Src{}, err
	}
	var s Src
	for _, p := range pairs {
		switch p.key {
		case "instance":
			if err := checkInstance("instance", p.val); err != nil {
				return Src{}, err
			}
			s.Instance = p.val
		case "region":
			if err := checkRegion(p.val); err != nil {
				return Src{}, err
			}
			s.Region = p.val
		case "state":
			if err := checkState(p.val); err != nil {
				return Src{}, err
			}
			s.State = p.val
		case "t":
			t, err := parseMicros(p.val)
			if err != nil {
				return Src{}, err
			}
			s.T = t
		}
	}
	return s, nil
}

// parseMicros accepts plain decimal digits only: strconv would also take a
// sign or, with base 0, a prefix, none of which the proxy ever writes.
func parseMicros(v string) (time.Time, error) {
	for n := 0; n < len(v); n++ {
		if v[n] < '0' || v[n] > '9' {
			return time.Time{}, fmt.Errorf("%w: t %q: want unix microseconds", ErrInvalidValue, clip(v))
		}
	}
	us, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: t %q: want unix microseconds", ErrInvalidValue, clip(v))
	}
	return time.UnixMicro(us).UTC(), nil
}

// Failure is the reason the proxy gives in fly-replay-failed on the
// request it sends to the fallback.
type Failure string

const (
	// Timeout: the instruction's timeout (or the proxy's) ran out.
	Timeout Failure = "timeout"
	// RetriesExhausted: candidates existed but every attempt failed.
	RetriesExhausted Failure = "retries_exhausted"
	// NoCandidate: no machine matched the instruction at all.
	NoCandidate Failure = "no_candidate"
)

// ParseFailure reads a fly-replay-failed value; unknown reasons are an
// error so that a client cannot invent one the app would act upon.
func ParseFailure(v string) (Failure, error) {
	switch f := Failure(strings.ToLower(trimOWS(v))); f {
	case Timeout, RetriesExhausted, NoCandidate:
		return f, nil
	}
	return "", fmt.Errorf("%w: fly-replay-failed %q", ErrInvalidValue, clip(v))
}
