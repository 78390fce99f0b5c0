package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
)

const fleetUsage = `usage: edgeproxy fleet <command> [flags]

Reads and writes the fleet catalog over NATS. -config names a config file
whose [fleet] table says how to reach the fleet's NATS (for an embedded
server, its listen address and credentials).

commands:
  apply -config FILE [-dry-run] [-owner NAME]
                           publish the file's apps and machines; show the
                           changes first; remove only records NAME wrote
  apps -config FILE        list apps
  machines -config FILE [-region R]
                           list machines
  nodes -config FILE       list live nodes
  machines set-state -config FILE ID started|stopped|suspended
  cordon -config FILE ID   no new requests for the machine
  uncordon -config FILE ID
  profile -config FILE -node NAME [-seconds 30] [-o cpu.pprof] [-token-file FILE]
                           record a CPU profile of any node, over NATS
  ca init -dir DIR [-days 3650]
                           make the fleet's CA (ca.pem, ca-key.pem) for the
                           backhaul's mutual TLS; once per fleet
  cert issue -ca-dir DIR -node NAME [-out DIR] [-days 365]
                           sign a node certificate (NAME.pem, NAME-key.pem)
                           for both ends of the backhaul
`

// runFleet is `edgeproxy fleet`.
func runFleet(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, fleetUsage)
		return usageError{fmt.Errorf("no command")}
	}
	cmd, args := args[0], args[1:]
	if cmd == "ca" || cmd == "cert" {
		return fleetIdentity(cmd, args, stdout, stderr)
	}
	if cmd == "machines" && len(args) > 0 && args[0] == "set-state" {
		cmd, args = "set-state", args[1:]
	}
	fs := flag.NewFlagSet("fleet "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edgeproxy.toml", "config file with the [fleet] table (for apply, also the apps to publish)")
	dryRun := fs.Bool("dry-run", false, "apply: show the changes, make none")
	owner := fs.String("owner", "fleet-apply", "apply: the owner written into records; only its records are removed")
	region := fs.String("region", "", "machines: only this region")
	jsonOut := fs.Bool("json", false, "list commands: print JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long (profile: on top of -seconds)")
	nodeName := fs.String("node", "", "profile: the node to profile")
	seconds := fs.Int("seconds", 30, "profile: seconds to record")
	out := fs.String("o", "cpu.pprof", "profile: file to write")
	tokenFile := fs.String("token-file", "", "profile: file holding the node's admin token, if it has one")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, _, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Fleet == nil {
		return fmt.Errorf("%s has no [fleet] table: nothing says where the fleet is", *path)
	}
	store, done, err := dialFleet(cfg)
	if err != nil {
		return err
	}
	defer done()
	if cmd == "profile" {
		*timeout += time.Duration(*seconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch cmd {
	case "profile":
		return fleetProfile(ctx, store, *nodeName, *seconds, *out, *tokenFile, stdout)
	case "apply":
		plan, err := store.Plan(ctx, cfg.Apps, *owner, cfg.Proxy.Region)
		if err != nil {
			return err
		}
		if len(plan) == 0 {
			fmt.Fprintln(stdout, "no changes")
			return nil
		}
		if *dryRun {
			for _, c := range plan {
				fmt.Fprintln(stdout, c)
			}
			fmt.Fprintf(stdout, "%d changes (dry run: none made)\n", len(plan))
			return nil
		}
		return store.Apply(ctx, plan, stdout)
	case "apps":
		apps, err := store.Apps(ctx)
		if err != nil {
			return err
		}
		return list(stdout, *jsonOut, apps, "NAME\tHOSTNAMES\tOWNER\tUPDATED", func(a *fleet.AppRecord) string {
			return fmt.Sprintf("%s\t%v\t%s\t%s", a.Name, a.Hostnames, a.Owner, a.Updated.Format(time.RFC3339))
		})
	case "machines":
		ms, err := store.Machines(ctx, *region)
		if err != nil {
			return err
		}
		return list(stdout, *jsonOut, ms, "ID\tAPP\tREGION\tADDRESS\tSTATE\tCORDONED\tOWNER\tVERSION", func(m *fleet.MachineRecord) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%v\t%s\t%d", m.ID, m.App, m.Region, m.Address, m.State, m.Cordoned, m.Owner, m.Version)
		})
	case "nodes":
		ns, err := store.Nodes(ctx)
		if err != nil {
			return err
		}
		return list(stdout, *jsonOut, ns, "NAME\tROLE\tREGION\tVERSION\tHEARTBEAT", func(n *fleet.NodeRecord) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", n.Name, n.Role, n.Region, n.Version, n.Heartbeat.Format(time.RFC3339))
		})
	case "set-state", "cordon", "uncordon":
		return changeMachine(ctx, store, cmd, fs.Args(), stdout)
	}
	fmt.Fprint(stderr, fleetUsage)
	return usageError{fmt.Errorf("unknown fleet command %q", cmd)}
}

// fleetProfile is `fleet profile`.
func fleetProfile(ctx context.Context, store *fleet.Store, node string, seconds int, out, tokenFile string, stdout io.Writer) error {
	if node == "" {
		return fmt.Errorf("-node is required (edgeproxy fleet nodes lists them)")
	}
	token := ""
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	body, err := fleet.FetchProfile(ctx, store.Conn(), node, seconds, token)
	if err != nil {
		return err
	}
	return writeProfile(out, body, seconds, "node "+node, stdout)
}

// changeMachine is set-state, cordon and uncordon.
func changeMachine(ctx context.Context, store *fleet.Store, cmd string, args []string, stdout io.Writer) error {
	want := 1
	if cmd == "set-state" {
		want = 2
	}
	if len(args) != want {
		return fmt.Errorf("%s takes %d arguments, got %d", cmd, want, len(args))
	}
	m, err := store.GetMachine(ctx, args[0])
	if err != nil {
		return err
	}
	switch cmd {
	case "set-state":
		switch args[1] {
		case "started", "stopped", "suspended":
			m.State = args[1]
		default:
			return fmt.Errorf("state must be started, stopped or suspended, got %q", args[1])
		}
	case "cordon":
		m.Cordoned = true
	case "uncordon":
		m.Cordoned = false
	}
	if err := store.PutMachine(ctx, m); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "machine %s of %s in %s: state %s, cordoned %v\n", m.ID, m.App, m.Region, m.State, m.Cordoned)
	return nil
}

// list prints records as a table, or as JSON.
func list[T any](w io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// dialFleet connects to the fleet the config's [fleet] names: its URLs,
// or the address its embedded server listens on.
func dialFleet(cfg *config.Config) (*fleet.Store, func(), error) {
	f := *cfg.Fleet
	if f.Embedded {
		f.Embedded = false
		f.URLs = []string{"nats://" + f.Listen}
	}
	nc, err := fleet.ConnectOnce(&f, cfg.Resolve)
	if err != nil {
		return nil, nil, err
	}
	store, err := fleet.NewStore(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return store, nc.Close, nil
}

// fleetIdentity is `edgeproxy fleet ca init` and `fleet cert issue`: the
// fleet's own CA and node certificates, made with no fleet running.
func fleetIdentity(cmd string, args []string, stdout, stderr io.Writer) error {
	want := map[string]string{"ca": "init", "cert": "issue"}[cmd]
	if len(args) == 0 || args[0] != want {
		fmt.Fprint(stderr, fleetUsage)
		return usageError{fmt.Errorf("fleet %s: the command is `fleet %s %s`", cmd, cmd, want)}
	}
	fs := flag.NewFlagSet("fleet "+cmd+" "+want, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "ca init: directory for ca.pem and ca-key.pem")
	caDir := fs.String("ca-dir", "", "cert issue: directory of the fleet CA")
	node := fs.String("node", "", "cert issue: the node's name, as in its [fleet] node")
	out := fs.String("out", ".", "cert issue: directory for NODE.pem and NODE-key.pem")
	name := fs.String("name", "edgeproxy fleet CA", "ca init: the CA's common name")
	days := fs.Int("days", 0, "validity in days (default 3650 for the CA, 365 for a node; never past the CA's end)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	validity := func(def int) time.Duration {
		if *days > 0 {
			def = *days
		}
		return time.Duration(def) * 24 * time.Hour
	}
	now := time.Now()
	if cmd == "ca" {
		if *dir == "" {
			return usageError{fmt.Errorf("fleet ca init: -dir is required")}
		}
		if err := backhaul.InitCA(*dir, *name, validity(3650), now); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fleet CA written to %s (keep %s secret; give %s to every node)\n",
			*dir, backhaul.CAKeyFile, backhaul.CACertFile)
		return nil
	}
	if *caDir == "" || *node == "" {
		return usageError{fmt.Errorf("fleet cert issue: -ca-dir and -node are required")}
	}
	if err := backhaul.IssueNode(*caDir, *out, *node, validity(365), now); err != nil {
		return err
	}
	cert, key := backhaul.NodeFiles(*out, *node)
	fmt.Fprintf(stdout, "certificate for node %s: %s, key %s\n", *node, cert, key)
	return nil
}
