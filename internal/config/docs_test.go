package config

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// configDocPath is relative to this package: go test runs in its directory.
var configDocPath = filepath.Join("..", "..", "docs", "config.md")

// documentedDefaults renders each default of the schema the way
// docs/config.md writes it in the default column of the key's row. Values
// come from the constants themselves, so changing a default without
// changing the doc fails TestConfigDocDefaults; TestConfigDocDefaults also
// fails when a Default* constant is added here without an entry.
var documentedDefaults = map[string]struct {
	key   string
	value any
}{
	"DefaultRegion":                {"region", DefaultRegion},
	"DefaultBind":                  {"bind", DefaultBind},
	"DefaultConnectTimeout":        {"connect_timeout", DefaultConnectTimeout},
	"DefaultConnectAttempts":       {"connect_attempts", DefaultConnectAttempts},
	"DefaultQueueTimeout":          {"queue_timeout", DefaultQueueTimeout},
	"DefaultHandshakeTimeout":      {"handshake_timeout", DefaultHandshakeTimeout},
	"DefaultTicketRotation":        {"session_ticket_rotation", DefaultTicketRotation},
	"DefaultTicketLifetime":        {"session_ticket_lifetime", DefaultTicketLifetime},
	"DefaultIdleTimeout":           {"idle_timeout", DefaultIdleTimeout},
	"DefaultResponseHeaderTimeout": {"response_header_timeout", DefaultResponseHeaderTimeout},
	"DefaultMaxHeaderBytes":        {"max_header_bytes", DefaultMaxHeaderBytes},
	"DefaultSoftLimit":             {"soft_limit", DefaultSoftLimit},
	"DefaultHalfClosedTimeout":     {"half_closed_timeout", DefaultHalfClosedTimeout},
	"DefaultLingeringTimeout":      {"lingering_timeout", DefaultLingeringTimeout},
	"DefaultLingeringMaxBytes":     {"lingering_max_bytes", DefaultLingeringMaxBytes},
	"DefaultMaxConnectionAge":      {"max_connection_age", DefaultMaxConnectionAge},
	"DefaultDrainTimeout":          {"drain_timeout", DefaultDrainTimeout},
	"DefaultSniffMaxBytes":         {"sniff_max_bytes", DefaultSniffMaxBytes},
	"DefaultBodyTimeout":           {"body_timeout", DefaultBodyTimeout},
	"DefaultBodyMinBytes":          {"body_min_bytes", DefaultBodyMinBytes},
	"DefaultCompressMinSize":       {"compress_min_size", DefaultCompressMinSize},
	"DefaultH2MaxStreams":          {"h2_max_concurrent_streams", DefaultH2MaxStreams},
	"DefaultH2MaxResets":           {"h2_max_resets_per_second", DefaultH2MaxResets},
	"DefaultH2MaxSettings":         {"h2_max_settings_per_second", DefaultH2MaxSettings},
	"DefaultH2MaxPings":            {"h2_max_pings_per_second", DefaultH2MaxPings},
	"DefaultMaxConnections":        {"max_connections", DefaultMaxConnections},
	"DefaultMaxConnectionsPerApp":  {"max_connections_per_app", DefaultMaxConnectionsPerApp},
	"DefaultProxyProtocolTimeout":  {"timeout", DefaultProxyProtocolTimeout},
	"DefaultGuardZeroProgress":     {"zero_progress_reads", DefaultGuardZeroProgress},
	"DefaultGuardReadsAfterEOF":    {"reads_after_eof", DefaultGuardReadsAfterEOF},
	"DefaultGuardCallsPerSecond":   {"max_calls_per_second", DefaultGuardCallsPerSecond},
	"DefaultAdminListen":           {"listen", DefaultAdminListen},
	"DefaultAccessLog":             {"access_log", DefaultAccessLog},
	"DefaultTracingSampleRatio":    {"sample_ratio", DefaultTracingSampleRatio},
	"DefaultTracingServiceName":    {"service_name", DefaultTracingServiceName},
	"DefaultTripwireThreshold":     {"threshold", DefaultTripwireThreshold},
	"DefaultTripwireSamples":       {"samples", DefaultTripwireSamples},
	"DefaultTripwireProfile":       {"profile_duration", DefaultTripwireProfile},
	"DefaultTripwireDir":           {"dir", DefaultTripwireDir},
	"DefaultTripwireMaxFiles":      {"max_files", DefaultTripwireMaxFiles},
	"DefaultTripwireCooldown":      {"cooldown", DefaultTripwireCooldown},
	"DefaultCheckInterval":         {"interval", DefaultCheckInterval},
	"DefaultCheckTimeout":          {"timeout", DefaultCheckTimeout},
	"DefaultCheckGracePeriod":      {"grace_period", DefaultCheckGracePeriod},
	"DefaultCheckUnhealthyAfter":   {"unhealthy_after", DefaultCheckUnhealthyAfter},
	"DefaultCheckHealthyAfter":     {"healthy_after", DefaultCheckHealthyAfter},
	"DefaultCheckMethod":           {"method", DefaultCheckMethod},
	"DefaultCheckPath":             {"path", DefaultCheckPath},
	"DefaultCheckProtocol":         {"protocol", DefaultCheckProtocol},
	"DefaultBalance":               {"balance", DefaultBalance},
	"DefaultAutostopInterval":      {"autostop_interval", DefaultAutostopInterval},
	"DefaultKillSignal":            {"kill_signal", DefaultKillSignal},
	"DefaultKillTimeout":           {"kill_timeout", DefaultKillTimeout},
	"DefaultStartTimeout":          {"start_timeout", DefaultStartTimeout},
	"DefaultDriverLogDir":          {"log_dir", DefaultDriverLogDir},
	"DefaultAPIRequestTimeout":     {"request_timeout", DefaultAPIRequestTimeout},
	"DefaultAPIRetries":            {"retries", DefaultAPIRetries},
	"DefaultFleetListen":           {"listen", DefaultFleetListen},
	"DefaultFleetRole":             {"role", DefaultFleetRole},
	"DefaultFleetDir":              {"data_dir", DefaultFleetDir},
	"DefaultACMEDirectory":         {"directory", DefaultACMEDirectory},
	"DefaultACMEStorageDir":        {"storage_dir", DefaultACMEStorageDir},
	"DefaultProcessGroup":          {"process_group", DefaultProcessGroup},
	"DefaultUDPIdleTimeout":        {"udp_idle_timeout", DefaultUDPIdleTimeout},
	"DefaultMaxUDPFlows":           {"max_udp_flows", DefaultMaxUDPFlows},
	"DefaultMaxCompressed":         {"max_compressed_responses", DefaultMaxCompressed},
	"DefaultACMERenewCheck":        {"renew_check_interval", DefaultACMERenewCheck},
}

// literalDefaults are defaults applyDefaults writes without a named
// constant.
var literalDefaults = []struct{ key, rendered string }{
	{"log_level", `"info"`},
	{"state", `"started"`},
	{"mode", `"off"`},
}

// TestConfigDocKeys walks the schema by reflection and requires every TOML
// key to have a row in docs/config.md (or to be part of a section heading),
// and every table to be named in the doc in the bracket form a user writes.
// A field added to types.go without documentation fails here.
func TestConfigDocKeys(t *testing.T) {
	doc := readConfigDoc(t)
	rows := docRows(doc)
	documented := map[string]bool{}
	for _, r := range rows {
		for _, k := range backticked(r[0]) {
			addSegments(documented, k)
		}
	}
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "#") {
			for _, k := range backticked(line) {
				addSegments(documented, k)
			}
		}
	}

	keys := map[string]string{} // key name -> first path it was seen at
	var tables []string
	walkTOML(reflect.TypeOf(Config{}), "", keys, &tables)
	walkTOML(reflect.TypeOf(flyToml{}), "fly.toml:", keys, nil)
	if len(keys) < 40 {
		t.Fatalf("schema walk found only %d keys; is walkTOML broken?", len(keys))
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !documented[k] {
			t.Errorf("key %q (at %s) has no row in %s: add `%s` to the table of its section", k, keys[k], configDocPath, k)
		}
	}
	for _, tbl := range tables {
		if !strings.Contains(doc, "`"+tbl+"`") {
			t.Errorf("table %s is not named in %s", tbl, configDocPath)
		}
	}
}

// TestConfigDocDefaults requires each default to appear in the default
// column of its key's row.
func TestConfigDocDefaults(t *testing.T) {
	doc := readConfigDoc(t)
	rows := docRows(doc)
	for _, name := range defaultConstants(t) {
		if _, ok := documentedDefaults[name]; !ok {
			t.Errorf("constant %s has no entry in documentedDefaults: add it, and its value to %s", name, configDocPath)
		}
	}
	check := func(key, rendered string) {
		for _, r := range rows {
			if len(r) >= 3 && contains(backticked(r[0]), key) && strings.Contains(r[2], "`"+rendered+"`") {
				return
			}
		}
		t.Errorf("%s: no row for `%s` with default `%s`", configDocPath, key, rendered)
	}
	for _, d := range documentedDefaults {
		check(d.key, renderDefault(d.value))
	}
	for _, d := range literalDefaults {
		check(d.key, d.rendered)
	}
	// Not a default, but a limit users hit and should find documented.
	if !strings.Contains(doc, fmt.Sprint(MaxListeners)) {
		t.Errorf("%s does not mention the %d public port limit", configDocPath, MaxListeners)
	}
}

// renderDefault writes a value as the doc does: durations in whole seconds
// ("60s", not Go's "1m0s"), strings quoted as in TOML, numbers plain.
func renderDefault(v any) string {
	switch x := v.(type) {
	case time.Duration:
		if x%time.Second == 0 {
			return fmt.Sprintf("%ds", x/time.Second)
		}
		return x.String()
	case string:
		return fmt.Sprintf("%q", x)
	default:
		return fmt.Sprint(x)
	}
}

// walkTOML records the toml key of every field reachable from typ, through
// structs, pointers, slices and maps, and the bracket form of every table.
func walkTOML(typ reflect.Type, path string, keys map[string]string, tables *[]string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" {
			// An embedded struct's keys sit in the embedding table, as
			// the TOML decoder reads them.
			walkTOML(f.Type, path, keys, tables)
			continue
		}
		if name == "" {
			name = f.Name
		}
		full := name
		if path != "" && !strings.HasSuffix(path, ":") {
			full = path + "." + name
		} else if path != "" {
			full = path + name
		}
		if _, seen := keys[name]; !seen {
			keys[name] = full
		}
		ft := f.Type
		array := false
		for {
			switch ft.Kind() {
			case reflect.Pointer:
				ft = ft.Elem()
				continue
			case reflect.Slice, reflect.Array:
				ft, array = ft.Elem(), true
				continue
			case reflect.Map:
				ft = ft.Elem()
				continue
			}
			break
		}
		if ft.Kind() != reflect.Struct || ft.PkgPath() != typ.PkgPath() {
			continue // a value (Duration is an integer), not a table
		}
		if tables != nil {
			if array {
				*tables = append(*tables, "[["+full+"]]")
			} else {
				*tables = append(*tables, "["+full+"]")
			}
		}
		walkTOML(ft, full, keys, tables)
	}
}

// defaultConstants lists the Default* constants declared in the package's
// non-test files.
func defaultConstants(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if strings.HasPrefix(n.Name, "Default") {
						out = append(out, n.Name)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("found no Default* constants; did they move?")
	}
	return out
}

func readConfigDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docRows splits the doc's Markdown table rows into trimmed cells.
func docRows(doc string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

var backtickRE = regexp.MustCompile("`([^`]+)`")

func backticked(s string) []string {
	var out []string
	for _, m := range backtickRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// addSegments records each dotted part of a documented name:
// "[[apps.services.ports]]" documents apps, services and ports.
func addSegments(set map[string]bool, name string) {
	name = strings.Trim(name, "[]")
	for _, seg := range strings.Split(name, ".") {
		set[seg] = true
	}
}
