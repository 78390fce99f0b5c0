//go:build !linux

package iox

import (
	"errors"
	"time"
)

// Parker is Linux-only (epoll); elsewhere NewParker fails and idle
// connections keep their goroutine.
type Parker struct{}

// ErrParkerClosed is returned by Park once the Parker is closed.
var ErrParkerClosed = errors.New("iox: parker closed")

var errNoParker = errors.New("iox: no parker on this platform")

// NewParker fails here.
func NewParker() (*Parker, error) { return nil, errNoParker }

// Park fails here.
func (p *Parker) Park(int, time.Duration, func(bool)) (uint64, error) { return 0, errNoParker }

// Unpark does nothing here.
func (p *Parker) Unpark(uint64) {}

// Close does nothing here.
func (p *Parker) Close() {}

// Parked is always 0 here.
func (p *Parker) Parked() int { return 0 }
