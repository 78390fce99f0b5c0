// Command edgeproxy is an edge proxy for app platforms. Subcommands:
//
//	edgeproxy run -config FILE        serve the apps of a config file
//	edgeproxy validate -config FILE   check a config; exit 1 on any problem
//	edgeproxy upgrade -pid-file FILE  hand a running proxy's sockets to a new process
//	edgeproxy version                 print the version
//	edgeproxy demo-machine -listen ADDR -id ID
//	                                  a demo backend for the quick start and tests
//	edgeproxy storm -target HOST:PORT -sni NAME
//	                                  reproduce hostile connection shapes at volume
//	edgeproxy profile -admin URL -seconds N -o FILE
//	                                  pull a CPU profile from a running proxy
//	edgeproxy fleet apply -config FILE   publish apps and machines to the fleet catalog
//	edgeproxy gen-cert -cert FILE -key FILE NAME...
//	                                  write a self-signed certificate for local runs
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runProxy(args[1:], stderr)
	case "validate":
		return runValidate(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "edgeproxy %s\n", version)
		return 0
	case "demo-machine":
		err = runDemoMachine(args[1:])
	case "upgrade":
		err = runUpgrade(args[1:], stdout)
	case "gen-cert":
		err = runGenCert(args[1:], stdout)
	case "storm":
		err = runStorm(args[1:], stdout, stderr)
	case "profile":
		err = runProfile(args[1:], stdout, stderr)
	case "fleet":
		err = runFleet(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "edgeproxy: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// -h: the flag package printed the command's help.
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		fmt.Fprintf(stderr, "edgeproxy %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// usageError marks flag errors, which the flag package already printed.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: edgeproxy <command> [flags]

commands:
  run -config FILE                    serve the apps of a config file
  validate -config FILE               check a config file; exit status 1 on any problem
  upgrade -pid-file FILE              hand a running proxy over to a new process (SIGUSR2)
  version                             print the version
  demo-machine -listen ADDR -id ID    run a demo backend (HTTP and TCP echo)
  gen-cert -cert FILE -key FILE NAME... write a self-signed certificate for local runs
  storm -target HOST:PORT -sni NAME   reproduce the incident's connection shapes at volume
  profile [-admin URL] -o FILE        record a CPU profile of a running proxy through its admin API
  fleet apply|apps|machines|nodes|cordon|uncordon -config FILE
                                      read and write the fleet catalog (edgeproxy fleet for more)
`)
}
