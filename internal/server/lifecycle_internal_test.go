package server

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
)

// TestFirstToStart: the machine started for work is the nearest; among
// equals, one not failing to start lately, then one not stopped lately,
// then a suspended one, then the first by id.
func TestFirstToStart(t *testing.T) {
	m := func(id, state string) *catalog.Machine { return &catalog.Machine{ID: id, State: state} }
	for _, tc := range []struct {
		name string
		cs   []startCand
		want string
	}{
		{"none", nil, ""},
		{"nearest first", []startCand{{m: m("a", "stopped"), dist: 2}, {m: m("b", "stopped"), dist: 1}}, "b"},
		{"stopped lately avoided", []startCand{{m: m("a", "stopped"), stoppedLately: true}, {m: m("b", "stopped")}}, "b"},
		{"stopped lately if nothing else", []startCand{{m: m("a", "stopped"), stoppedLately: true}}, "a"},
		{"failing avoided before stopped lately", []startCand{{m: m("a", "stopped"), failing: true}, {m: m("b", "stopped"), stoppedLately: true}}, "b"},
		{"suspended resumes faster", []startCand{{m: m("a", "stopped")}, {m: m("b", "suspended")}}, "b"},
		{"nearness beats all", []startCand{{m: m("a", "stopped"), dist: 0, stoppedLately: true}, {m: m("b", "suspended"), dist: 1}}, "a"},
		{"then by id", []startCand{{m: m("b", "stopped")}, {m: m("a", "stopped")}}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := firstToStart(tc.cs)
			id := ""
			if got != nil {
				id = got.ID
			}
			if id != tc.want {
				t.Errorf("chose %q, want %q", id, tc.want)
			}
		})
	}
}
