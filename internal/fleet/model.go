// Package fleet shares one catalog of apps and machines between the nodes
// of a fleet over NATS JetStream, and runs the NATS server itself when the
// fleet is one node (or a few) with nothing else installed.
//
// The shape follows what the platform edgeproxy models learned: workers
// are the source of truth for their machines, state is regional in detail
// and global only in summary, and every node serves from its own copy, so
// the store being slow or down changes how fresh that copy is, never
// whether a request is served. Every value carries a schema version;
// records are checked one by one, and a bad one leaves the previous good
// value in place.
//
// Key-value buckets (docs/fleet.md has the full account):
//
//	ep-apps               APP            AppRecord: name, hostnames, services
//	ep-summary            APP            SummaryRecord: per region, machines and started
//	ep-machines-REGION    APP.MACHINE    MachineRecord: address, state, owner, cordoned
//	ep-nodes              NODE           NodeRecord: role, region, heartbeat (TTL)
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// Schema is the version of the records this build writes. A record with
// a newer schema is refused (and counted), so old and new nodes can run
// side by side during an upgrade: the old ones keep the last value they
// understood.
const Schema = 1

// Bucket names.
const (
	BucketApps          = "ep-apps"
	BucketSummary       = "ep-summary"
	BucketNodes         = "ep-nodes"
	machineBucketPrefix = "ep-machines-"
)

// MachineBucket is the bucket of a region's machines.
func MachineBucket(region string) string { return machineBucketPrefix + region }

// nameRE is what apps, machines and nodes may be called: it must fit in
// a key token.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// AppRecord is an app as the fleet knows it: what [[apps]] holds, but its
// machines, which are regional records of their own.
type AppRecord struct {
	Schema      int                 `json:"schema"`
	Name        string              `json:"name"`
	Hostnames   []string            `json:"hostnames,omitempty"`
	Services    []config.Service    `json:"services,omitempty"`
	HTTPService *config.HTTPService `json:"http_service,omitempty"`
	// Owner is who wrote it (fleet apply's -owner): apply removes only
	// what it owns.
	Owner   string    `json:"owner,omitempty"`
	Updated time.Time `json:"updated"`
}

// RegionCount is one region's share of an app's machines.
type RegionCount struct {
	Machines int `json:"machines"`
	Started  int `json:"started"`
}

// SummaryRecord says which regions have an app's machines: small, global.
type SummaryRecord struct {
	Schema  int                    `json:"schema"`
	App     string                 `json:"app"`
	Regions map[string]RegionCount `json:"regions"`
	Updated time.Time              `json:"updated"`
}

// MachineRecord is one machine, written by the worker that runs it.
type MachineRecord struct {
	Schema   int            `json:"schema"`
	ID       string         `json:"id"`
	App      string         `json:"app"`
	Region   string         `json:"region"`
	Address  string         `json:"address"`
	Ports    map[string]int `json:"ports,omitempty"`
	State    string         `json:"state"`
	Owner    string         `json:"owner,omitempty"`
	Cordoned bool           `json:"cordoned,omitempty"`
	// ProcessGroup is the machine's process group ("": "app").
	ProcessGroup string `json:"process_group,omitempty"`
	// Version counts the owner's writes; Updated is when it wrote.
	Version uint64    `json:"version"`
	Updated time.Time `json:"updated"`
}

// NodeRecord is a node's heartbeat: it disappears with the bucket's TTL
// when the node stops writing it.
type NodeRecord struct {
	Schema    int      `json:"schema"`
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Region    string   `json:"region"`
	Addresses []string `json:"addresses,omitempty"`
	// Backhaul is where edges reach a worker's machines through it.
	Backhaul  string    `json:"backhaul,omitempty"`
	Version   string    `json:"version"`
	Heartbeat time.Time `json:"heartbeat"`
	// Seen is when the store took the record (its clock, not the
	// node's): how fresh a watcher knows the node to be.
	Seen time.Time `json:"-"`
}

// MachineKey is a machine's key in its region's bucket.
func MachineKey(app, id string) string { return app + "." + id }

var (
	errSchema = errors.New("schema from a newer edgeproxy")
	errKey    = errors.New("key does not match the record")
)

// decode reads a record and checks the schema every record carries.
func decode(b []byte, v any, schema *int) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("not a record: %w", err)
	}
	switch {
	case *schema > Schema:
		return fmt.Errorf("%w (schema %d, this node reads up to %d)", errSchema, *schema, Schema)
	case *schema < 1:
		return fmt.Errorf("no schema")
	}
	return nil
}

// DecodeApp reads and checks an ep-apps record stored under key.
func DecodeApp(key string, b []byte) (*AppRecord, error) {
	var r AppRecord
	if err := decode(b, &r, &r.Schema); err != nil {
		return nil, err
	}
	if r.Name != key || !nameRE.MatchString(r.Name) {
		return nil, fmt.Errorf("%w: app %q under key %q", errKey, r.Name, key)
	}
	return &r, nil
}

// DecodeMachine reads and checks an ep-machines-REGION record.
func DecodeMachine(region, key string, b []byte) (*MachineRecord, error) {
	var r MachineRecord
	if err := decode(b, &r, &r.Schema); err != nil {
		return nil, err
	}
	if key != MachineKey(r.App, r.ID) || r.Region != region || !nameRE.MatchString(r.ID) || !nameRE.MatchString(r.App) {
		return nil, fmt.Errorf("%w: machine %q of %q in region %q under key %q", errKey, r.ID, r.App, r.Region, key)
	}
	if _, err := netip.ParseAddr(r.Address); err != nil {
		return nil, fmt.Errorf("machine %s: bad address %q", r.ID, r.Address)
	}
	switch r.State {
	case "started", "stopped", "suspended":
	default:
		return nil, fmt.Errorf("machine %s: bad state %q", r.ID, r.State)
	}
	for k, p := range r.Ports {
		if p < 1 || p > 65535 || strings.TrimLeft(k, "0123456789") != "" {
			return nil, fmt.Errorf("machine %s: bad port mapping %s = %d", r.ID, k, p)
		}
	}
	return &r, nil
}

// DecodeSummary reads and checks an ep-summary record.
func DecodeSummary(key string, b []byte) (*SummaryRecord, error) {
	var r SummaryRecord
	if err := decode(b, &r, &r.Schema); err != nil {
		return nil, err
	}
	if r.App != key {
		return nil, fmt.Errorf("%w: summary of %q under key %q", errKey, r.App, key)
	}
	for region := range r.Regions {
		if !config.ValidRegion(region) {
			return nil, fmt.Errorf("summary of %s: bad region %q", r.App, region)
		}
	}
	return &r, nil
}

// DecodeNode reads and checks an ep-nodes record.
func DecodeNode(key string, b []byte) (*NodeRecord, error) {
	var r NodeRecord
	if err := decode(b, &r, &r.Schema); err != nil {
		return nil, err
	}
	if r.Name != key {
		return nil, fmt.Errorf("%w: node %q under key %q", errKey, r.Name, key)
	}
	return &r, nil
}

// AppConfig turns an app record and its machines into the [[apps]] entry
// the runtime is built from.
func AppConfig(a *AppRecord, machines []*MachineRecord) config.App {
	app := config.App{Name: a.Name, Hostnames: a.Hostnames, Services: a.Services, HTTPService: a.HTTPService}
	for _, m := range machines {
		app.Machines = append(app.Machines, config.Machine{ID: m.ID, Region: m.Region, Address: m.Address,
			Ports: m.Ports, State: m.State, Cordoned: m.Cordoned, Owner: m.Owner, ProcessGroup: m.ProcessGroup})
	}
	// The record's services are shared with every catalog built from it:
	// their defaults are filled here, on the watcher's goroutine, once,
	// so that validating a catalog later (a reload does, on another
	// goroutine) finds nothing to write.
	config.AppDefaults(&app, "")
	return app
}
