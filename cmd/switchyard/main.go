// Command switchyard is Switchyard's one binary. Subcommands:
//
//	proxy     run the sidecar proxy
//	control   run the control plane (API, sidecar registry, mirrors, cutovers)
//	ctl       talk to a control plane: cutovers, sidecars, mirrors
//	mirror    run the mirror engine
//	verify    compare a mirror's copy with its source, partition by partition
//	inject    serve the Kubernetes sidecar injector webhook
//	demo      a complete switch on two embedded clusters, no setup
//	version   print the version
//
// Run `switchyard <subcommand> --help` for a subcommand's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `switchyard moves live Kafka applications between clusters.

Usage: switchyard <command> [flags]

Commands:
  proxy     run the sidecar proxy (switchyard proxy --help)
  control   run the control plane (switchyard control --help)
  ctl       start, watch and abort cutovers; list sidecars and mirrors (switchyard ctl --help)
  mirror    run the mirror engine (switchyard mirror --help)
  verify    prove the target holds exactly the source's records (switchyard verify --help)
  inject    serve the sidecar injector webhook (switchyard inject --help)
  demo      run a complete switch on two embedded in-process clusters
  version   print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run executes a subcommand and returns the process exit code: 0 on
// success, 2 for usage and configuration errors, 1 for anything else.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "proxy":
		err = runProxy(ctx, args[1:], getenv, stderr)
	case "control":
		err = runControl(ctx, args[1:], getenv, stderr)
	case "ctl":
		err = runCtl(ctx, args[1:], getenv, stdout, stderr)
	case "mirror":
		err = runMirror(ctx, args[1:], getenv, stderr)
	case "verify":
		err = runVerify(ctx, args[1:], getenv, stdout, stderr)
	case "inject":
		err = runInject(ctx, args[1:], getenv, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "switchyard %s\n", version)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "switchyard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "switchyard %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "switchyard %s: %v\n", args[0], err)
		return 1
	}
}

// usageError marks bad flags, environment or configuration (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }
