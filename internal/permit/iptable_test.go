package permit

import (
	"net/netip"
	"testing"
)

func mustKey(t *testing.T, s string) ipKey {
	t.Helper()
	k, ok := keyOf(netip.MustParseAddr(s))
	if !ok {
		t.Fatalf("no key for %s", s)
	}
	return k
}

func TestKeyGrouping(t *testing.T) {
	same := [][2]string{
		{"192.0.2.1", "::ffff:192.0.2.1"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"2001:db8:1:2::1", "2001:db8:1:2::1%eth0"},
		{"fe80::1%eth0", "fe80::2%eth1"},
	}
	for _, p := range same {
		if mustKey(t, p[0]) != mustKey(t, p[1]) {
			t.Errorf("%s and %s have different keys", p[0], p[1])
		}
	}
	different := [][2]string{
		{"192.0.2.1", "192.0.2.2"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "::192.0.2.1"}, // IPv4-compatible is IPv6, not IPv4
		{"0.0.0.0", "::"},
	}
	for _, p := range different {
		if mustKey(t, p[0]) == mustKey(t, p[1]) {
			t.Errorf("%s and %s share a key", p[0], p[1])
		}
	}
	if _, ok := keyOf(netip.Addr{}); ok {
		t.Error("the zero Addr has a key")
	}
}

// TestShardSpread checks that consecutive addresses, which a scan walks in
// order, are spread over every shard rather than piling onto a few locks.
func TestShardSpread(t *testing.T) {
	const perShard = 64
	var counts [ipShards]int
	repeats, prev := 0, -1
	for i := range ipShards * perShard {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		k, _ := keyOf(a)
		counts[k.shard()]++
		if k.shard() == prev {
			repeats++
		}
		prev = k.shard()
	}
	for i, c := range counts {
		if c < perShard/3 || c > perShard*3 {
			t.Errorf("shard %d got %d of %d addresses", i, c, ipShards*perShard)
		}
	}
	// A well-spread scan repeats the previous shard about once in 64.
	if repeats > 3*perShard {
		t.Errorf("%d of %d consecutive addresses share a shard with the previous one", repeats, ipShards*perShard)
	}
	counts = [ipShards]int{}
	for i := range ipShards * perShard {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i)})
		k, _ := keyOf(a)
		counts[k.shard()]++
	}
	for i, c := range counts {
		if c < perShard/3 || c > perShard*3 {
			t.Errorf("IPv6: shard %d got %d of %d /64s", i, c, ipShards*perShard)
		}
	}
}

// TestTableGivesBackMemory checks that shards drop maps and queues that a
// burst grew, since Go maps never shrink on their own.
func TestTableGivesBackMemory(t *testing.T) {
	l := New(Limits{}, nil)
	var held []*Permit
	for i := range ipShards * shrinkAt * 2 {
		p, err := l.Admit(443, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for _, p := range held {
		p.Release()
	}
	for i := range l.ips.shards {
		s := &l.ips.shards[i]
		if s.m != nil || s.peak != 0 || s.idle != nil {
			t.Fatalf("shard %d kept len %d peak %d queue cap %d", i, len(s.m), s.peak, cap(s.idle))
		}
	}
}
