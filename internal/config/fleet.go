package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
)

// Fleet defaults.
const (
	DefaultFleetListen = "127.0.0.1:4222"
	DefaultFleetRole   = "edge+worker"
	DefaultFleetDir    = "edgeproxy-fleet" // under the system temp dir, then the node name
)

// regionRE is what a region may be called: it names a JetStream bucket.
var regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ValidRegion reports whether r can name a region in the fleet.
func ValidRegion(r string) bool { return regionRE.MatchString(r) }

func fleetDefaults(f *Fleet) {
	if f == nil {
		return
	}
	if f.Node == "" {
		f.Node, _ = os.Hostname()
	}
	setStr(&f.Role, DefaultFleetRole)
	if f.Embedded {
		setStr(&f.Listen, DefaultFleetListen)
	}
	setStr(&f.DataDir, filepath.Join(os.TempDir(), DefaultFleetDir, f.Node))
}

func (c *checker) validateFleet(cfg *Config, s *source) {
	f := cfg.Fleet
	if f == nil {
		return
	}
	switch {
	case len(f.URLs) > 0 && f.Embedded:
		c.at(s, "fleet.urls", "set urls (an external NATS) or embedded = true, not both")
	case len(f.URLs) == 0 && !f.Embedded:
		c.at(s, "fleet.urls", "needs the fleet's NATS urls, or embedded = true to run one in this process")
	}
	if !nameRE.MatchString(f.Node) {
		c.at(s, "fleet.node", "%q is not a valid node name (lowercase letters, digits and '-'); set node", f.Node)
	}
	switch f.Role {
	case "edge", "worker", "edge+worker":
	default:
		c.at(s, "fleet.role", "must be edge, worker or edge+worker, got %q", f.Role)
	}
	if !ValidRegion(cfg.Proxy.Region) {
		c.at(s, "proxy.region", "%q cannot name a fleet region (lowercase letters, digits and '-', at most 32)", cfg.Proxy.Region)
	}
	for _, r := range f.Regions {
		if !ValidRegion(r) {
			c.at(s, "fleet.regions", "%q is not a valid region name", r)
		}
	}
	creds := c.fleetFiles(cfg, s, fleetFile{"creds_file", f.CredsFile}, fleetFile{"user_file", f.UserFile},
		fleetFile{"password_file", f.PasswordFile}, fleetFile{"token_file", f.TokenFile})
	c.fleetFiles(cfg, s, fleetFile{"ca_file", f.CAFile}, fleetFile{"cert_file", f.CertFile}, fleetFile{"key_file", f.KeyFile})
	if (f.UserFile == "") != (f.PasswordFile == "") {
		c.at(s, "fleet.user_file", "user_file and password_file go together")
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		c.at(s, "fleet.cert_file", "cert_file and key_file go together")
	}
	c.validateBackhaul(cfg, s)
	if f.Embedded {
		c.embeddedListen(s, "fleet.listen", f.Listen, creds > 0)
		if f.ClusterListen != "" {
			c.embeddedListen(s, "fleet.cluster_listen", f.ClusterListen, creds > 0)
			if f.ClusterName == "" {
				c.at(s, "fleet.cluster_name", "required with cluster_listen")
			}
		}
		if f.CredsFile != "" {
			c.at(s, "fleet.creds_file", "an embedded server takes a token_file or a user_file and password_file; creds files are for external NATS")
		}
	}
}

// embeddedListen checks an address the embedded server binds: anything
// but loopback is reachable by others, and then needs credentials.
func (c *checker) embeddedListen(s *source, key, addr string, creds bool) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		c.at(s, key, "%q is not HOST:PORT", addr)
		return
	}
	ip, err := netip.ParseAddr(host)
	loopback := host == "localhost" || err == nil && ip.IsLoopback()
	if !loopback && !creds {
		c.at(s, key, "%q is not loopback: an embedded server others can reach needs token_file or user_file and password_file", addr)
	}
}

// WithApps returns a copy of base with apps from outside its file (the
// fleet catalog) added, their defaults applied, and the problems that
// refuse them; base itself is not changed. Problems name the app, not a
// line.
func WithApps(base *Config, apps []App) (*Config, []Problem) {
	cfg := *base
	cfg.Apps = make([]App, 0, len(base.Apps)+len(apps))
	cfg.Apps = append(cfg.Apps, base.Apps...)
	cfg.Apps = append(cfg.Apps, apps...)
	for i := len(base.Apps); i < len(cfg.Apps); i++ {
		AppDefaults(&cfg.Apps[i], cfg.Proxy.Region)
	}
	c := &checker{}
	main := &source{file: "fleet", pos: &positions{lines: map[string]int{}}}
	srcs := map[int]*source{-1: main}
	for i := range cfg.Apps {
		srcs[i] = main
	}
	c.validateApps(&cfg, srcs)
	for i := range c.problems {
		c.problems[i].Msg = appNamed(&cfg, c.problems[i].Key) + c.problems[i].Msg
	}
	return &cfg, c.problems
}

// MachineProblems checks only a's machines, as the config would: enough
// for a change that leaves everything else about the app as it was.
func MachineProblems(a *App) []Problem {
	c := &checker{}
	main := &source{file: "fleet", pos: &positions{lines: map[string]int{}}}
	c.machines(a, "app", main)
	for i := range c.problems {
		c.problems[i].Msg = fmt.Sprintf("app %q: ", a.Name) + c.problems[i].Msg
	}
	return c.problems
}

// SameButMachines reports whether a and b differ in their machines only:
// then the app's services, hostnames and ports, and so every check across
// apps, stand as they were.
func SameButMachines(a, b *App) bool {
	x, y := *a, *b
	x.Machines, y.Machines = nil, nil
	return reflect.DeepEqual(x, y)
}

// ProblemApp is the index in cfg.Apps of the app a problem is about.
func ProblemApp(p Problem) (int, bool) {
	var i int
	if _, err := fmt.Sscanf(p.Key, "apps[%d]", &i); err == nil && i >= 0 {
		return i, true
	}
	return 0, false
}

// appNamed prefixes a problem with the app its key points into.
func appNamed(cfg *Config, key string) string {
	var i int
	if _, err := fmt.Sscanf(key, "apps[%d]", &i); err == nil && i >= 0 && i < len(cfg.Apps) {
		return fmt.Sprintf("app %q: ", cfg.Apps[i].Name)
	}
	return ""
}

// Lifecycle is how traffic drives an app's machines, from its services'
// keys together: auto-start if any service has it (the default), the
// first auto_stop_machines that is not off ("stop" or "suspend"; "" for
// none), and the largest min_machines_running.
func (a *App) Lifecycle() (autostart bool, autostop string, minRunning int) {
	for _, s := range a.AllServices() {
		if s.AutoStartMachines == nil || *s.AutoStartMachines {
			autostart = true
		}
		if autostop == "" {
			switch v := s.AutoStopMachines.(type) {
			case bool:
				if v {
					autostop = "stop"
				}
			case string:
				if v == "stop" || v == "suspend" {
					autostop = v
				}
			}
		}
		if s.MinMachinesRunning != nil {
			minRunning = max(minRunning, *s.MinMachinesRunning)
		}
	}
	return autostart, autostop, minRunning
}

// validateBackhaul checks the backhaul keys: the certificate trio goes
// together, a listener needs them and the worker role, and edges must be
// able to dial what is advertised.
func (c *checker) validateBackhaul(cfg *Config, s *source) {
	f := cfg.Fleet
	files := c.fleetFiles(cfg, s, fleetFile{"backhaul_ca_file", f.BackhaulCAFile},
		fleetFile{"backhaul_cert_file", f.BackhaulCertFile}, fleetFile{"backhaul_key_file", f.BackhaulKeyFile})
	if files != 0 && files != 3 {
		c.at(s, "fleet.backhaul_cert_file", "backhaul_ca_file, backhaul_cert_file and backhaul_key_file go together (make them with `edgeproxy fleet ca init` and `edgeproxy fleet cert issue`)")
	}
	if f.BackhaulListen == "" {
		if f.BackhaulAdvertise != "" {
			c.at(s, "fleet.backhaul_advertise", "set with backhaul_listen only")
		}
		return
	}
	if !f.Worker() {
		c.at(s, "fleet.backhaul_listen", "only a worker listens for the backhaul; role is %q", f.Role)
	}
	if files == 0 {
		c.at(s, "fleet.backhaul_listen", "needs backhaul_ca_file, backhaul_cert_file and backhaul_key_file: the backhaul is mutual TLS")
	}
	host, _, err := net.SplitHostPort(f.BackhaulListen)
	if err != nil {
		c.at(s, "fleet.backhaul_listen", "%q is not HOST:PORT: %v", f.BackhaulListen, err)
		return
	}
	adv := f.BackhaulAdvertise
	if adv == "" {
		if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
			c.at(s, "fleet.backhaul_advertise", "backhaul_listen %q names no address edges can dial: set backhaul_advertise", f.BackhaulListen)
		}
		return
	}
	if _, _, err := net.SplitHostPort(adv); err != nil {
		c.at(s, "fleet.backhaul_advertise", "%q is not HOST:PORT: %v", adv, err)
	}
}

// fleetFile is a [fleet] key naming a file.
type fleetFile struct{ key, path string }

// fleetFiles reports each set file that cannot be read and returns how
// many are set.
func (c *checker) fleetFiles(cfg *Config, s *source, files ...fleetFile) int {
	set := 0
	for _, f := range files {
		if f.path == "" {
			continue
		}
		set++
		if _, err := os.Stat(cfg.Resolve(f.path)); err != nil {
			c.at(s, "fleet."+f.key, "cannot read %s: %v", f.path, err)
		}
	}
	return set
}
