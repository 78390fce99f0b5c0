package fleet

import (
	"encoding/json"
	"testing"
)

func TestDecodeMachine(t *testing.T) {
	good := `{"schema":1,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","ports":{"8080":9000},"state":"started"}`
	if m, err := DecodeMachine("iad", "web.m1", []byte(good)); err != nil || m.Address != "10.0.0.1" {
		t.Fatalf("good record: %v %+v", err, m)
	}
	for name, tc := range map[string]struct{ region, key, rec string }{
		"not JSON":       {"iad", "web.m1", "garbage"},
		"future schema":  {"iad", "web.m1", `{"schema":2,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"started"}`},
		"no schema":      {"iad", "web.m1", `{"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"started"}`},
		"other key":      {"iad", "web.m2", good},
		"other region":   {"ord", "web.m1", good},
		"bad address":    {"iad", "web.m1", `{"schema":1,"id":"m1","app":"web","region":"iad","address":"nowhere","state":"started"}`},
		"bad state":      {"iad", "web.m1", `{"schema":1,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"running"}`},
		"bad port":       {"iad", "web.m1", `{"schema":1,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"started","ports":{"8080":70000}}`},
		"bad port key":   {"iad", "web.m1", `{"schema":1,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"started","ports":{"http":80}}`},
		"bad machine id": {"iad", "web.M 1", `{"schema":1,"id":"M 1","app":"web","region":"iad","address":"10.0.0.1","state":"started"}`},
	} {
		if _, err := DecodeMachine(tc.region, tc.key, []byte(tc.rec)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDecodeAppAndSummary(t *testing.T) {
	a := &AppRecord{Schema: 1, Name: "web", Hostnames: []string{"web.example"}}
	b, _ := json.Marshal(a)
	if _, err := DecodeApp("web", b); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeApp("other", b); err == nil {
		t.Error("an app under another key was accepted")
	}
	if _, err := DecodeSummary("web", []byte(`{"schema":1,"app":"web","regions":{"IAD!":{"machines":1}}}`)); err == nil {
		t.Error("a summary with a bad region was accepted")
	}
	if _, err := DecodeNode("n1", []byte(`{"schema":1,"name":"n2"}`)); err == nil {
		t.Error("a node under another key was accepted")
	}
}

// FuzzDecode: no record, however broken, panics a decoder; a record a
// decoder accepts names the key it was stored under.
func FuzzDecode(f *testing.F) {
	f.Add("web.m1", []byte(`{"schema":1,"id":"m1","app":"web","region":"iad","address":"10.0.0.1","state":"started"}`))
	f.Add("web", []byte(`{"schema":1,"name":"web","services":[{"InternalPort":8080}]}`))
	f.Add("web", []byte(`{"schema":1,"app":"web","regions":{"iad":{"machines":1,"started":1}}}`))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		if m, err := DecodeMachine("iad", key, b); err == nil && MachineKey(m.App, m.ID) != key {
			t.Fatalf("machine %s/%s accepted under %q", m.App, m.ID, key)
		}
		if a, err := DecodeApp(key, b); err == nil && a.Name != key {
			t.Fatalf("app %q accepted under %q", a.Name, key)
		}
		DecodeSummary(key, b)
		DecodeNode(key, b)
	})
}
