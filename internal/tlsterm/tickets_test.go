package tlsterm

import (
	"bytes"
	"crypto/tls"
	"testing"
	"time"
)

// ticketServer is a server config the way the server builds them: a
// base config choosing the certificate per name, with keys from tk.
func ticketServer(t *testing.T, tk *Tickets, version uint16) *tls.Config {
	t.Helper()
	certFile, keyFile := testPair(t, "*.example.com")
	store, err := Load([]CertSpec{{CertFile: certFile, KeyFile: keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := ServerConfig(store.Lookup(hello.ServerName), nil, version, version)
		tk.Apply(c)
		return c, nil
	}}
}

// resumes connects twice with one session cache, the second time under
// name2, and says whether the second connection resumed.
func resumes(t *testing.T, srv1, srv2 *tls.Config, name1, name2 string, between func()) bool {
	t.Helper()
	cache := &AnyNameCache{}
	for i, name := range []string{name1, name2} {
		cli := &tls.Config{ServerName: name, InsecureSkipVerify: true, ClientSessionCache: cache}
		srv := srv1
		if i == 1 {
			srv = srv2
		}
		state, cerr, serr := handshake(t, srv, cli)
		if cerr != nil || serr != nil {
			t.Fatalf("connection %d: client error %v, server error %v", i, cerr, serr)
		}
		if i == 0 {
			if state.DidResume {
				t.Fatal("the first connection resumed")
			}
			if between != nil {
				between()
			}
			continue
		}
		return state.DidResume
	}
	return false
}

func TestTicketsBindTheServerName(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			tk := NewTickets(time.Hour, 24*time.Hour, nil)
			srv := ticketServer(t, tk, version)
			if !resumes(t, srv, srv, "a.example.com", "a.example.com", nil) {
				t.Error("a session did not resume under its own name")
			}
			if !resumes(t, srv, srv, "a.example.com", "A.Example.COM", nil) {
				t.Error("a session did not resume under its own name in other case")
			}
			if resumes(t, srv, srv, "a.example.com", "b.example.com", nil) {
				t.Error("a session begun under a.example.com resumed under b.example.com")
			}
		})
	}
}

func TestTicketsRotate(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tk := NewTickets(time.Hour, 3*time.Hour, clock)
	srv := ticketServer(t, tk, tls.VersionTLS13)
	first := tk.Keys()[0]

	// An hour on, a new key encrypts; tickets of the old one resume.
	if !resumes(t, srv, srv, "a.example.com", "a.example.com", func() {
		now = now.Add(time.Hour)
		if !tk.Rotate() {
			t.Error("no new key after the rotation period")
		}
	}) {
		t.Error("a ticket of the previous key did not resume")
	}
	if keys := tk.Keys(); len(keys) != 2 || keys[1].Key != first.Key {
		t.Fatalf("after one rotation: %d keys, want the new one and the first", len(keys))
	}
	if tk.Rotate() {
		t.Error("Rotate changed the keys again within the period")
	}

	// A ticket older than the lifetime does not resume, though its key
	// is still kept.
	if resumes(t, srv, srv, "a.example.com", "a.example.com", func() { now = now.Add(3*time.Hour + time.Minute) }) {
		t.Error("a ticket older than the lifetime resumed")
	}

	// Keys no valid ticket can use are forgotten.
	now = now.Add(10 * time.Hour)
	tk.Rotate()
	for _, k := range tk.Keys() {
		if now.Sub(k.Created) > 4*time.Hour {
			t.Errorf("a key made %v ago is kept (rotation 1h + lifetime 3h)", now.Sub(k.Created))
		}
	}
}

// Two processes (an upgrade) or two edges (a fleet) that merge each
// other's keys resume each other's tickets.
func TestTicketsMergeAcrossNodes(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			a := NewTickets(time.Hour, 24*time.Hour, nil)
			b := NewTickets(time.Hour, 24*time.Hour, nil)
			srvA, srvB := ticketServer(t, a, version), ticketServer(t, b, version)
			if resumes(t, srvA, srvB, "a.example.com", "a.example.com", nil) {
				t.Fatal("a ticket resumed at a node with other keys")
			}
			keys, err := ParseTicketKeys(MarshalTicketKeys(a.Keys()))
			if err != nil {
				t.Fatal(err)
			}
			b.Merge(keys)
			if !resumes(t, srvA, srvB, "a.example.com", "a.example.com", nil) {
				t.Error("a ticket of A did not resume at B after B merged A's keys")
			}
			a.Merge(b.Keys())
			if !resumes(t, srvB, srvA, "a.example.com", "a.example.com", nil) {
				t.Error("a ticket of B did not resume at A after the merge")
			}
		})
	}
}

func TestParseTicketKeys(t *testing.T) {
	keys := NewTickets(time.Hour, time.Hour, nil).Keys()
	b := MarshalTicketKeys(keys)
	got, err := ParseTicketKeys(b)
	if err != nil || len(got) != 1 || got[0].Key != keys[0].Key || !got[0].Created.Equal(keys[0].Created) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {2}, append(bytes.Clone(b), 1)} {
		if _, err := ParseTicketKeys(bad); err == nil {
			t.Errorf("ParseTicketKeys(%x) accepted", bad)
		}
	}
}

func FuzzParseTicketKeys(f *testing.F) {
	f.Add(MarshalTicketKeys(NewTickets(time.Hour, time.Hour, nil).Keys()))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseTicketKeys(b)
		if err != nil {
			return
		}
		if again := MarshalTicketKeys(keys); !bytes.Equal(again, b) {
			t.Errorf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

// A chain of resumptions, each within the lifetime of the ticket before
// it, keeps resuming, and the ticket does not grow with it.
func TestTicketsResumptionChain(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	tk := NewTickets(time.Hour, 3*time.Hour, func() time.Time { return now })
	srv := ticketServer(t, tk, tls.VersionTLS13)
	cache := tls.NewLRUClientSessionCache(1)
	cli := &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, ClientSessionCache: cache}
	var sizes []int
	for i := range 6 {
		state, cerr, serr := handshake(t, srv, cli)
		if cerr != nil || serr != nil {
			t.Fatalf("connection %d: %v, %v", i, cerr, serr)
		}
		if i > 0 && !state.DidResume {
			t.Fatalf("connection %d did not resume", i)
		}
		cs, ok := cache.Get("a.example.com")
		if !ok {
			t.Fatal("no session cached")
		}
		ticket, _, err := cs.ResumptionState()
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(ticket))
		now = now.Add(time.Hour)
	}
	if sizes[len(sizes)-1] > sizes[0]+16 {
		t.Errorf("ticket sizes over a chain of resumptions: %v; want them steady", sizes)
	}
}
