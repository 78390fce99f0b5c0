package tlsterm

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tickets owns the keys that encrypt TLS session tickets, and what a
// ticket may resume.
//
// Keys rotate: a new one encrypts new tickets every Rotation, and a key
// is forgotten once no ticket it encrypted can still be valid, so
// recorded sessions become undecryptable after about Rotation+Lifetime
// (forward secrecy with a bound, where one key per process had none
// short of a restart). The keys outlive reloads (one Tickets per node),
// move to the new process on an upgrade (MarshalTicketKeys, then
// ParseTicketKeys and Merge there) and can be shared by a fleet's edges
// (Merge), so a client that resumes at another
// process or edge behind the same address still resumes.
//
// A ticket is bound to the server name it was issued under: RFC 6066
// §3 forbids resuming a session under another name, and a resumption
// skips the certificate, so a session begun at one app would otherwise
// continue at another app the client never authenticated.
type Tickets struct {
	rotation, lifetime time.Duration
	now                func() time.Time

	// holder carries the keys in the form crypto/tls uses them
	// (EncryptTicket and DecryptTicket with SetSessionTicketKeys).
	holder *tls.Config

	mu   sync.Mutex
	keys []TicketKey // newest first
}

// TicketKey is one session-ticket key and when it was made.
type TicketKey struct {
	Created time.Time
	Key     [32]byte
}

// NewTickets makes a node's ticket keys: the inherited ones (from the
// process it takes over from), and a new one if none of those is recent.
func NewTickets(rotation, lifetime time.Duration, now func() time.Time, inherited ...TicketKey) *Tickets {
	if now == nil {
		now = time.Now
	}
	t := &Tickets{rotation: rotation, lifetime: lifetime, now: now, holder: &tls.Config{}}
	if len(inherited) > 0 {
		t.Merge(inherited)
	}
	t.Rotate()
	return t
}

// SetPeriods changes the rotation period and the tickets' lifetime (a
// reload); the next Rotate applies them.
func (t *Tickets) SetPeriods(rotation, lifetime time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotation, t.lifetime = rotation, lifetime
}

// Rotate makes a new key if the newest is Rotation old, forgets keys no
// valid ticket can use, and reports whether the set changed. The server
// calls it on a timer (and after Merge).
func (t *Tickets) Rotate() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	changed := false
	if len(t.keys) == 0 || now.Sub(t.keys[0].Created) >= t.rotation {
		k := TicketKey{Created: now}
		if _, err := rand.Read(k.Key[:]); err != nil {
			// crypto/rand does not fail on Linux; if it ever does, the
			// current key keeps serving rather than a weak one.
			return false
		}
		t.keys = slices.Insert(t.keys, 0, k)
		changed = true
	}
	// A key encrypts for Rotation after it was made, and its tickets
	// live Lifetime after that.
	keep := len(t.keys)
	for keep > 1 && now.Sub(t.keys[keep-1].Created) > t.rotation+t.lifetime {
		keep--
	}
	if keep < len(t.keys) {
		t.keys = t.keys[:keep]
		changed = true
	}
	if changed {
		t.install()
	}
	return changed
}

// install gives crypto/tls the keys, newest (the encrypting one) first.
func (t *Tickets) install() {
	raw := make([][32]byte, len(t.keys))
	for i, k := range t.keys {
		raw[i] = k.Key
	}
	t.holder.SetSessionTicketKeys(raw)
}

// Keys is a copy of the keys, newest first.
func (t *Tickets) Keys() []TicketKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.keys)
}

// Merge adds keys another process or edge made (a handover, the fleet's
// shared set): the newest key of the union encrypts, so every edge that
// has merged the same keys issues tickets all of them accept.
func (t *Tickets) Merge(keys []TicketKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if !slices.ContainsFunc(t.keys, func(o TicketKey) bool { return o.Key == k.Key }) {
			t.keys = append(t.keys, k)
		}
	}
	slices.SortStableFunc(t.keys, func(a, b TicketKey) int { return b.Created.Compare(a.Created) })
	t.install()
}

// ticketKeysVersion starts MarshalTicketKeys' encoding.
const ticketKeysVersion = 1

// MarshalTicketKeys encodes keys for another process: a version byte,
// then per key its creation time (Unix nanoseconds) and the key.
func MarshalTicketKeys(keys []TicketKey) []byte {
	b := make([]byte, 1, 1+len(keys)*40)
	b[0] = ticketKeysVersion
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created.UnixNano()))
		b = append(b, k.Key[:]...)
	}
	return b
}

// ParseTicketKeys decodes MarshalTicketKeys' encoding.
func ParseTicketKeys(b []byte) ([]TicketKey, error) {
	if len(b) == 0 || b[0] != ticketKeysVersion || (len(b)-1)%40 != 0 {
		return nil, errors.New("session ticket keys: not an encoding this version reads")
	}
	var keys []TicketKey
	for b = b[1:]; len(b) > 0; b = b[40:] {
		k := TicketKey{Created: time.Unix(0, int64(binary.BigEndian.Uint64(b)))}
		copy(k.Key[:], b[8:40])
		keys = append(keys, k)
	}
	return keys, nil
}

func (t *Tickets) lifetimeNow() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lifetime
}

// Apply makes cfg issue and accept tickets with these keys, bound to
// the server name of the handshake, and accept none older than Lifetime.
func (t *Tickets) Apply(cfg *tls.Config) {
	cfg.WrapSession = t.wrap
	cfg.UnwrapSession = t.unwrap
}

// ticketBinding prefixes the session's own data: the name it was issued
// under and when, in the ticket's encrypted part.
const ticketBinding = "edgeproxy-sni/1 "

func (t *Tickets) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	// crypto/tls hands every new ticket, a resumed session's too, a
	// fresh state: the binding is made anew with the name just checked,
	// and a ticket's lifetime counts from when it was issued, as
	// crypto/tls's own limit does.
	ss.Extra = append(ss.Extra, fmt.Appendf(nil, "%s%d %s", ticketBinding, t.now().Unix(), normalize(SNIHost(cs.ServerName))))
	return t.holder.EncryptTicket(cs, ss)
}

// unwrap decrypts a ticket; one under another name, too old, or not ours
// is no session at all (a full handshake), not an error: the client did
// nothing wrong by offering it.
func (t *Tickets) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, err := t.holder.DecryptTicket(identity, cs)
	if err != nil || ss == nil {
		return nil, err
	}
	name := normalize(SNIHost(cs.ServerName))
	for _, e := range ss.Extra {
		rest, ok := strings.CutPrefix(string(e), ticketBinding)
		if !ok {
			continue
		}
		at, sni, ok := strings.Cut(rest, " ")
		unix, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil || sni != name || t.now().Sub(time.Unix(unix, 0)) > t.lifetimeNow() {
			return nil, nil
		}
		return ss, nil
	}
	return nil, nil
}
