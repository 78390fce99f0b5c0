package config

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written in TOML either as a Go duration
// string ("10s", "1m30s") or, as fly.toml does for idle_timeout, as a whole
// number of seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalTOML accepts a string or an integer number of seconds.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("invalid duration %q (write it like \"10s\" or \"1m30s\")", x)
		}
		if p < 0 {
			return fmt.Errorf("duration %q is negative", x)
		}
		*d = Duration(p)
	case int64:
		if x < 0 {
			return fmt.Errorf("duration %d is negative", x)
		}
		if x > int64(365*24*time.Hour/time.Second) {
			return fmt.Errorf("duration %d seconds is longer than a year", x)
		}
		*d = Duration(time.Duration(x) * time.Second)
	default:
		return fmt.Errorf("invalid duration %v: want a string like \"10s\" or a number of seconds", v)
	}
	return nil
}

// MarshalText writes the duration in Go syntax, for the effective config.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads what MarshalText writes, for configs carried as
// JSON (the fleet catalog).
func (d *Duration) UnmarshalText(b []byte) error { return d.UnmarshalTOML(string(b)) }

// CheckDuration is a health check's timing: a duration string, or an
// integer number of milliseconds, which is how the platform reads the
// integers older fly.toml files give ("interval = 10000").
type CheckDuration Duration

// D returns the value as a time.Duration.
func (d CheckDuration) D() time.Duration { return time.Duration(d) }

// UnmarshalTOML accepts a string or an integer number of milliseconds.
func (d *CheckDuration) UnmarshalTOML(v any) error {
	if x, ok := v.(int64); ok {
		if x < 0 {
			return fmt.Errorf("duration %d is negative", x)
		}
		if x > int64(24*time.Hour/time.Millisecond) {
			return fmt.Errorf("check timing %d milliseconds is longer than a day", x)
		}
		*d = CheckDuration(time.Duration(x) * time.Millisecond)
		return nil
	}
	if _, ok := v.(string); !ok {
		return fmt.Errorf("invalid duration %v: want a string like \"10s\" or a number of milliseconds", v)
	}
	return (*Duration)(d).UnmarshalTOML(v)
}

// MarshalText writes the duration in Go syntax, for the effective config.
func (d CheckDuration) MarshalText() ([]byte, error) { return Duration(d).MarshalText() }

// UnmarshalText reads what MarshalText writes.
func (d *CheckDuration) UnmarshalText(b []byte) error { return (*Duration)(d).UnmarshalText(b) }
