package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

const cutoverUsage = `Usage: switchyard ctl cutover <start|watch|status|list|abort> [flags]

  start --app NAME --from CLUSTER --to CLUSTER [flags]   start a cutover
  watch ID                 follow a cutover live until it ends
  status ID                show a cutover
  list                     list cutovers, newest first
  abort ID [--reason TEXT] roll a cutover back

Run 'switchyard ctl cutover <command> --help' for a command's flags.
`

const cutoverStartUsage = `Usage: switchyard ctl cutover start --app NAME[,NAME] --from CLUSTER --to CLUSTER [flags]

Starts a cutover of the sidecars of the applications named (and carrying
every --label given) from one cluster to the other: preflight, gate
Produce, drain, sync the groups' offsets, flip, release, verify. Prints
the cutover's id; with --watch, then follows it like 'cutover watch' and
exits 0 when it is DONE, 1 when it rolled back or failed.

Unset policy flags take the control plane's defaults (HOLD gates, 30s
drain, 10s hold budget, 10s acknowledgement timeout, lag 10000).

--outbox is the outbox procedure: Produce gated in REJECT mode (answered
at once with a retriable error, so outbox producers keep their rows and
retry), drain, flip, release. It is --mode REJECT.

Example:
  switchyard ctl cutover start --app orders-service,billing --label role=producer \
    --from source --to target --topics orders,payments --groups billing --watch
`

const cutoverWatchUsage = `Usage: switchyard ctl cutover watch ID

Follows the cutover until it ends. On a terminal the display is redrawn in
place: the current step, every step with its duration, each selected
sidecar's acknowledgement, the mirror's lag, the block window. Otherwise
(a pipe, a log) one line is printed per change. With --output json, one
protojson object per state. If the control plane becomes unreachable, the
watch reconnects for up to a minute.

Exit code 0 when the cutover is DONE, 1 when it ROLLED_BACK or FAILED.
`

const cutoverStatusUsage = `Usage: switchyard ctl cutover status ID

Shows the cutover: its steps with durations and details, the selected
sidecars' acknowledgements, the mirror's lag, the block window, the
consumer-group offsets synced and the error, if any.
`

const cutoverListUsage = `Usage: switchyard ctl cutover list

Lists every cutover, newest first.
`

const cutoverAbortUsage = `Usage: switchyard ctl cutover abort ID [--reason TEXT]

Rolls the cutover back: its sidecars return to the source cluster and their
gates are lifted. Refused (FAILED_PRECONDITION) once the gates have been
released on the target or the cutover has ended.
`

// runCutover runs `switchyard ctl cutover <command>`.
func (c *ctl) runCutover(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, cutoverUsage)
		return usageError{errors.New("cutover: no command given (start, watch, status, list or abort)")}
	}
	switch args[0] {
	case "start", "create":
		return c.cutoverStart(ctx, args[1:])
	case "watch":
		return c.cutoverWatch(ctx, args[1:])
	case "status", "get":
		return c.cutoverStatus(ctx, args[1:])
	case "list", "ls":
		return c.cutoverList(ctx, args[1:])
	case "abort":
		return c.cutoverAbort(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stderr, cutoverUsage)
		return flag.ErrHelp
	default:
		return usageError{fmt.Errorf("cutover: unknown command %q (want start, watch, status, list or abort)", args[0])}
	}
}

// listFlag is a repeatable flag of comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// labelFlag is a repeatable flag of comma-separated key=value labels.
type labelFlag map[string]string

func (l labelFlag) String() string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}

func (l labelFlag) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("label %q: want key=value", kv)
		}
		if old, dup := l[k]; dup && old != v {
			return fmt.Errorf("label %q given twice (%q and %q)", k, old, v)
		}
		l[k] = strings.TrimSpace(v)
	}
	return nil
}

// parseCutoverStart maps the flags of `cutover start` onto a spec. Policy
// fields whose flag is not given stay unset: the control plane applies its
// defaults. It also reports whether --watch was given.
func (c *ctl) parseCutoverStart(args []string) (*switchyardv1.CutoverSpec, bool, error) {
	fs := c.flagSet("cutover start", cutoverStartUsage)
	var apps, topics, groups listFlag
	labels := labelFlag{}
	fs.Var(&apps, "app", "application `name`s to move, comma-separated or repeated (required)")
	fs.Var(labels, "label", "only sidecars carrying this `key=value` label; repeatable")
	from := fs.String("from", "", "`cluster` the applications are on (required)")
	to := fs.String("to", "", "`cluster` they move to (required)")
	mirror := fs.String("mirror", "", "`name` of the mirror copying source to target (default: the only one)")
	fs.Var(&topics, "topics", "`topics` the applications produce to, comma-separated, added to those their sidecars report (default: every mirrored topic must be copied before the flip)")
	fs.Var(&groups, "groups", "consumer `groups` whose offsets are synced exactly before the flip, comma-separated, added to those the sidecars report")
	mode := fs.String("mode", "", "how Produce is gated, `mode` HOLD (parked, released onto the target) or REJECT (answered with a retriable error) (default HOLD)")
	outbox := fs.Bool("outbox", false, "the outbox procedure: --mode REJECT")
	drain := fs.Duration("drain-timeout", 0, "`time` the drain may take before the cutover rolls back (default 30s)")
	hold := fs.Duration("hold-budget", 0, "`time` a HOLD gate may park a request (default 10s)")
	ack := fs.Duration("ack-timeout", 0, "`time` each step waits for every sidecar to acknowledge (default 10s)")
	groupDrain := fs.Duration("group-drain-timeout", 0, "two-phase cutovers: `time` the groups may take to consume what the producers left on the source, nothing gated; 0 quiesces them where they are (default 10s)")
	quiesce := fs.Duration("quiesce-timeout", 0, "two-phase cutovers: `time` the group applications may take to reach final offsets before they return to the source (default 15s)")
	maxLag := fs.Int64("max-lag", 0, "preflight: the most `records` the mirror may lag for the cutover to begin (default 10000)")
	watch := fs.Bool("watch", false, "follow the cutover until it ends, like 'cutover watch'")
	pos, err := c.parseArgs(fs, args)
	if err != nil {
		return nil, false, err
	}
	if err := wantArgs(pos); err != nil {
		return nil, false, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	gateMode := strings.ToUpper(strings.TrimSpace(*mode))
	switch {
	case len(apps) == 0:
		return nil, false, usageError{errors.New("--app is required: the application(s) to move")}
	case *from == "":
		return nil, false, usageError{errors.New("--from is required: the cluster the applications are on")}
	case *to == "":
		return nil, false, usageError{errors.New("--to is required: the cluster they move to")}
	case *from == *to:
		return nil, false, usageError{fmt.Errorf("--from and --to both name %q", *from)}
	case gateMode != "" && gateMode != "HOLD" && gateMode != "REJECT":
		return nil, false, usageError{fmt.Errorf("--mode %q: want HOLD or REJECT", *mode)}
	case *outbox && gateMode == "HOLD":
		return nil, false, usageError{errors.New("--outbox gates in REJECT mode; it contradicts --mode HOLD")}
	}
	if *outbox {
		gateMode = "REJECT"
	}
	if set["hold-budget"] && gateMode == "REJECT" {
		return nil, false, usageError{errors.New("--hold-budget applies to HOLD gates; this cutover gates in REJECT mode")}
	}
	policy := &switchyardv1.CutoverPolicy{GateMode: gateMode}
	for _, d := range []struct {
		name string
		v    time.Duration
		dst  **durationpb.Duration
	}{
		{"drain-timeout", *drain, &policy.DrainTimeout},
		{"hold-budget", *hold, &policy.HoldBudget},
		{"ack-timeout", *ack, &policy.AckTimeout},
		{"quiesce-timeout", *quiesce, &policy.QuiesceTimeout},
	} {
		if !set[d.name] {
			continue
		}
		if d.v <= 0 {
			return nil, false, usageError{fmt.Errorf("--%s %s: must be positive", d.name, d.v)}
		}
		*d.dst = durationpb.New(d.v)
	}
	if set["group-drain-timeout"] {
		if *groupDrain < 0 {
			return nil, false, usageError{fmt.Errorf("--group-drain-timeout %s: must not be negative", *groupDrain)}
		}
		policy.GroupDrainTimeout = durationpb.New(*groupDrain)
	}
	if set["max-lag"] {
		// The API cannot tell 0 from unset: 0 would silently mean the
		// default, so it is refused.
		if *maxLag < 1 {
			return nil, false, usageError{fmt.Errorf("--max-lag %d: must be at least 1 (0 means the control plane's default)", *maxLag)}
		}
		policy.MaxPreflightLag = *maxLag
	}
	spec := &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: apps},
		Source:   *from,
		Target:   *to,
		Mirror:   *mirror,
		Topics:   topics,
		Groups:   groups,
		Policy:   policy,
	}
	if len(labels) > 0 {
		spec.Selector.Labels = labels
	}
	return spec, *watch, nil
}

// cutoverStart runs `cutover start`.
func (c *ctl) cutoverStart(ctx context.Context, args []string) error {
	spec, watch, err := c.parseCutoverStart(args)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	resp, err := c.client.CreateCutover(cctx, &switchyardv1.CreateCutoverRequest{Spec: spec})
	cancel()
	if err != nil {
		return c.rpcErr("cutover start", err)
	}
	id := resp.GetCutover().GetId()
	if c.jsonOutput() {
		if err := c.printJSON(resp); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(c.stdout, id)
		// On stderr: stdout stays the id alone, for scripts.
		printCoverage(c.stderr, resp.GetCutover().GetCoverage())
	}
	if !watch {
		return nil
	}
	return c.watch(ctx, id)
}

// idCommand parses a command that takes one cutover id.
func (c *ctl) idCommand(name, usage string, args []string, setup func(*flag.FlagSet)) (string, error) {
	fs := c.flagSet(name, usage)
	if setup != nil {
		setup(fs)
	}
	pos, err := c.parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if err := wantArgs(pos, "ID (the cutover's id; see switchyard ctl cutover list)"); err != nil {
		return "", err
	}
	if err := c.connect(); err != nil {
		return "", err
	}
	return pos[0], nil
}

// cutoverWatch runs `cutover watch`.
func (c *ctl) cutoverWatch(ctx context.Context, args []string) error {
	id, err := c.idCommand("cutover watch", cutoverWatchUsage, args, nil)
	if err != nil {
		return err
	}
	return c.watch(ctx, id)
}

// cutoverStatus runs `cutover status`.
func (c *ctl) cutoverStatus(ctx context.Context, args []string) error {
	id, err := c.idCommand("cutover status", cutoverStatusUsage, args, nil)
	if err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.GetCutover(cctx, &switchyardv1.GetCutoverRequest{Id: id})
	if err != nil {
		return c.rpcErr("cutover status", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	cut := resp.GetCutover()
	fmt.Fprint(c.stdout, renderFrame(cut, c.now(), frameOptions{}))
	if cov := cut.GetCoverage(); len(cov.GetUnits()) > 0 {
		fmt.Fprintln(c.stdout)
		printCoverage(c.stdout, cov)
	}
	if offs := cut.GetGroupOffsets(); len(offs) > 0 {
		fmt.Fprintln(c.stdout)
		printGroupOffsets(c.stdout, offs)
	}
	return nil
}

// cutoverAbort runs `cutover abort`.
func (c *ctl) cutoverAbort(ctx context.Context, args []string) error {
	var reason string
	id, err := c.idCommand("cutover abort", cutoverAbortUsage, args, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "why, for the record")
	})
	if err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.AbortCutover(cctx, &switchyardv1.AbortCutoverRequest{Id: id, Reason: reason})
	if err != nil {
		return c.rpcErr("cutover abort", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	cut := resp.GetCutover()
	fmt.Fprintf(c.stdout, "cutover %s: abort requested in step %s; it rolls back (switchyard ctl cutover watch %s)\n",
		cut.GetId(), stepName(cut.GetStep()), cut.GetId())
	return nil
}

// cutoverList runs `cutover list`.
func (c *ctl) cutoverList(ctx context.Context, args []string) error {
	if err := c.noArgs(c.flagSet("cutover list", cutoverListUsage), args); err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.ListCutovers(cctx, &switchyardv1.ListCutoversRequest{})
	if err != nil {
		return c.rpcErr("cutover list", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	if len(resp.GetCutovers()) == 0 {
		fmt.Fprintln(c.stdout, "no cutovers")
		return nil
	}
	printCutovers(c.stdout, resp.GetCutovers(), c.now())
	return nil
}

// printCutovers writes the table of `cutover list`.
func printCutovers(w io.Writer, cuts []*switchyardv1.Cutover, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPPS\tFROM\tTO\tMODE\tSTEP\tCREATED\tTOOK\tBLOCK WINDOW\tERROR")
	for _, cut := range cuts {
		spec := cut.GetSpec()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cut.GetId(), selectorString(spec.GetSelector()), spec.GetSource(), spec.GetTarget(), gateMode(spec),
			stepName(cut.GetStep()), fmtTime(cut.GetCreated(), time.RFC3339), fmtDur(elapsed(cut, now)),
			blockWindowString(cut), orDash(oneLine(cut.GetError())))
	}
	_ = tw.Flush()
}

// printGroupOffsets writes the group offsets a cutover synced.
func printGroupOffsets(w io.Writer, offs []*switchyardv1.GroupOffset) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tSOURCE OFFSET\tTARGET OFFSET\tOUTCOME")
	for _, o := range offs {
		target := strconv.FormatInt(o.GetTarget(), 10)
		if o.GetTarget() < 0 {
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", o.GetGroup(), o.GetTopic(), o.GetPartition(), o.GetSource(), target, o.GetOutcome())
	}
	_ = tw.Flush()
}

// printCoverage writes what a cutover moves, unit by unit, and its
// warnings.
func printCoverage(w io.Writer, cov *switchyardv1.CutoverCoverage) {
	if len(cov.GetUnits()) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tPHASE\tROLE\tAPPS\tSIDECARS\tWRITES\tGROUPS\tOUTCOME")
	for _, u := range cov.GetUnits() {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", u.GetId(), u.GetPhase(), u.GetRole(),
			strings.Join(u.GetApps(), ","), len(u.GetSidecars()), orDash(strings.Join(u.GetWrites(), ",")),
			orDash(strings.Join(u.GetGroups(), ",")), orDash(u.GetOutcome()))
	}
	_ = tw.Flush()
	for _, warn := range cov.GetWarnings() {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}
