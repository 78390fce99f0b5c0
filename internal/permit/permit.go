package permit

import (
	"errors"
	"sync/atomic"
)

// ErrReleased is returned by AdmitApp on a permit that was already
// released: the connection is closing and must not be charged to an app.
var ErrReleased = errors.New("permit: already released")

// ErrOtherApp is returned by AdmitApp when the permit is already charged
// to a different app. A connection counts against one app, the first one
// routing named; a later request on it for another app is not admitted
// here.
var ErrOtherApp = errors.New("permit: connection already admitted for another app")

// Permit is the admission of one connection: the global, port and IP
// slots taken by Admit, plus the app slot taken by AdmitApp. Release gives
// all of them back exactly once, however many times and from however many
// goroutines it is called, so every close path may simply call it.
type Permit struct {
	l     *Limiter
	port  *gauge
	ip    ipKey
	hasIP bool

	// app is nil until AdmitApp succeeds, then the app's gauge; Release
	// swaps in &l.released and gives back whatever it swapped out. AdmitApp
	// only ever swaps from nil, so the app slot is given back exactly once
	// even when the two race.
	app  atomic.Pointer[appGauge]
	done atomic.Bool
}

// AdmitApp charges the connection to app once routing has named it. On
// refusal it returns a *Refused with scope "app" and the permit keeps its
// other slots: the caller closes the connection and releases the permit as
// a whole. Calling it again for the same app is a no-op; for another app it
// returns ErrOtherApp, and after Release it returns ErrReleased.
func (p *Permit) AdmitApp(app string) error {
	l := p.l
	if cur := p.app.Load(); cur != nil {
		return p.appState(cur, app)
	}
	if p.done.Load() {
		return ErrReleased
	}
	g := l.appGauge(app)
	if !g.tryAcquire(l.rules.Load().perApp) {
		return l.refuse(ScopeApp)
	}
	if !p.app.CompareAndSwap(nil, g) {
		// A concurrent AdmitApp or Release got there first.
		g.release()
		return p.appState(p.app.Load(), app)
	}
	// g now belongs to the permit. Release swaps the slot to &l.released
	// unconditionally, and our swap succeeded only from nil, so a Release
	// racing with us has not swapped yet and will take g and give it back.
	if p.done.Load() {
		return ErrReleased
	}
	return nil
}

// appState explains why AdmitApp(app) finds the slot already set to cur.
func (p *Permit) appState(cur *appGauge, app string) error {
	switch {
	case cur == &p.l.released:
		return ErrReleased
	case cur.name == app:
		return nil
	default:
		return ErrOtherApp
	}
}

// App is the app the connection is charged to, or "" before AdmitApp and
// after Release.
func (p *Permit) App() string {
	if g := p.app.Load(); g != nil && g != &p.l.released {
		return g.name
	}
	return ""
}

// Release gives back every slot the permit holds. Only the first call
// does anything; it is safe to call from several goroutines and on a nil
// Permit, so a caller may defer it before knowing whether Admit succeeded.
func (p *Permit) Release() {
	if p == nil || !p.done.CompareAndSwap(false, true) {
		return
	}
	l := p.l
	if g := p.app.Swap(&l.released); g != nil && g != &l.released {
		g.release()
	}
	if p.hasIP {
		l.ips.shard(p.ip).release(p.ip, l.rules.Load())
	}
	p.port.release()
	l.global.release()
}
