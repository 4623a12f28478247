package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

const sidecarsUsage = `Usage: switchyard ctl sidecars [--app NAME]
       switchyard ctl sidecars declare --app NAME[,NAME] --active CLUSTER [--label k=v]

Lists the sidecars that have connected to the control plane: who they are,
whether their stream is open, the cluster they are on and the one wanted,
the gate in force, the version applied against the version wanted, and the
last apply error. A sidecar that runs a version the control plane did not
issue it (after the control plane lost its store) is marked diverged.

declare makes CLUSTER, with no gate, the desired state of the applications'
sidecars — those connected and those that start later. It moves no client:
the control plane refuses it while a connected sidecar of the applications
runs elsewhere. Use it after the control plane lost its store, for the
applications whose sidecars are marked diverged. Needs the operator role.
`

// declareUsage is sidecarsUsage: declare is a form of sidecars.
const declareUsage = sidecarsUsage

const mirrorsUsage = `Usage: switchyard ctl mirrors

Lists the mirrors the control plane runs: readiness, partitions, lag
(records, and the age of the oldest record not yet copied), failing
partitions and errors; then the topics not mirrored and why.
`

const clustersUsage = `Usage: switchyard ctl clusters

Lists the clusters the control plane is configured with.
`

// runSidecars runs `switchyard ctl sidecars` and `sidecars declare`.
func (c *ctl) runSidecars(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "declare" {
		return c.sidecarsDeclare(ctx, args[1:])
	}
	fs := c.flagSet("sidecars", sidecarsUsage)
	app := fs.String("app", "", "only the sidecars of this application")
	if err := c.noArgs(fs, args); err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.ListSidecars(cctx, &switchyardv1.ListSidecarsRequest{App: *app})
	if err != nil {
		return c.rpcErr("sidecars", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	if len(resp.GetSidecars()) == 0 {
		if *app != "" {
			fmt.Fprintf(c.stdout, "no sidecar of %s has connected\n", *app)
		} else {
			fmt.Fprintln(c.stdout, "no sidecar has connected")
		}
		return nil
	}
	printSidecars(c.stdout, resp.GetSidecars(), c.now())
	return nil
}

// sidecarsDeclare runs `sidecars declare`.
func (c *ctl) sidecarsDeclare(ctx context.Context, args []string) error {
	fs := c.flagSet("sidecars declare", declareUsage)
	var apps listFlag
	labels := labelFlag{}
	fs.Var(&apps, "app", "application `name`s, comma-separated or repeated (required)")
	fs.Var(labels, "label", "only sidecars carrying this `key=value` label; repeatable")
	active := fs.String("active", "", "the `cluster` the sidecars run on (required)")
	if err := c.noArgs(fs, args); err != nil {
		return err
	}
	switch {
	case len(apps) == 0:
		return usageError{errors.New("--app is required: the application(s) whose state to declare")}
	case *active == "":
		return usageError{errors.New("--active is required: the cluster the sidecars run on")}
	}
	req := &switchyardv1.DeclareStateRequest{Selector: &switchyardv1.SidecarSelector{Apps: apps}, ActiveCluster: *active}
	if len(labels) > 0 {
		req.Selector.Labels = labels
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.DeclareState(cctx, req)
	if err != nil {
		return c.rpcErr("sidecars declare", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	fmt.Fprintf(c.stdout, "declared %s on %s, no gate, as version %d; %d connected sidecars covered\n",
		strings.Join(apps, ","), *active, resp.GetVersion(), len(resp.GetSidecars()))
	return nil
}

// printSidecars writes the table of `sidecars`.
func printSidecars(w io.Writer, sidecars []*switchyardv1.Sidecar, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tINSTANCE\tLABELS\tCONNECTED\tCLUSTER\tWANTED\tGATE\tVERSION\tLAST SEEN\tERROR")
	for _, s := range sidecars {
		id := s.GetIdentity()
		connected := "no"
		if s.GetConnected() {
			connected = "yes"
		}
		lastSeen := "-"
		if t := s.GetLastSeen(); t != nil {
			lastSeen = fmtDur(now.Sub(t.AsTime())) + " ago"
		}
		problem := oneLine(s.GetApplyError())
		if s.GetConnected() && s.GetAppliedVersion() > s.GetDesired().GetVersion() {
			problem = "diverged: runs a version this control plane did not issue it (sidecars declare)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n",
			id.GetApp(), id.GetInstance(), orDash(labelFlag(id.GetLabels()).String()), connected,
			orDash(s.GetStatus().GetActiveCluster()), orDash(s.GetDesired().GetActiveCluster()),
			gateString(s.GetStatus().GetGate()), s.GetAppliedVersion(), s.GetDesired().GetVersion(),
			lastSeen, orDash(problem))
	}
	_ = tw.Flush()
}

// gateString is "HOLD Produce,Fetch", "HOLD Produce; REJECT Fetch" for a
// gate with reject keys, "-" for no gate.
func gateString(g *switchyardv1.Gate) string {
	if g == nil || len(g.GetApiKeys())+len(g.GetRejectApiKeys()) == 0 {
		return "-"
	}
	names := func(keys []int32) string {
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = kmsg.NameForKey(int16(k))
			if out[i] == "Unknown" || out[i] == "" {
				out[i] = fmt.Sprint(k)
			}
		}
		return strings.Join(out, ",")
	}
	var parts []string
	if len(g.GetApiKeys()) > 0 {
		parts = append(parts, g.GetMode()+" "+names(g.GetApiKeys()))
	}
	if len(g.GetRejectApiKeys()) > 0 {
		parts = append(parts, "REJECT "+names(g.GetRejectApiKeys()))
	}
	return strings.Join(parts, "; ")
}

// runMirrors runs `switchyard ctl mirrors`.
func (c *ctl) runMirrors(ctx context.Context, args []string) error {
	fs := c.flagSet("mirrors", mirrorsUsage)
	if err := c.noArgs(fs, args); err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.ListMirrors(cctx, &switchyardv1.ListMirrorsRequest{})
	if err != nil {
		return c.rpcErr("mirrors", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	if len(resp.GetMirrors()) == 0 {
		fmt.Fprintln(c.stdout, "no mirrors")
		return nil
	}
	printMirrors(c.stdout, resp.GetMirrors())
	return nil
}

// printMirrors writes the table of `mirrors`, then the topics not
// mirrored and the offsets lost in gaps.
func printMirrors(w io.Writer, mirrors []*switchyardv1.Mirror) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tTARGET\tREADY\tPARTITIONS\tLAG RECORDS\tMAX LAG\tFAILING\tERROR")
	var topicErrs []string
	for _, m := range mirrors {
		var lag, lost int64
		var maxLag float64
		failing, gapped := 0, 0
		for _, p := range m.GetPartitions() {
			lag += p.GetLagRecords()
			maxLag = max(maxLag, p.GetLagSeconds())
			if p.GetFailing() {
				failing++
			}
			if p.GetLostOffsets() > 0 {
				lost += p.GetLostOffsets()
				gapped++
			}
		}
		ready := "no"
		if m.GetReady() {
			ready = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", m.GetName(), m.GetSource(), m.GetTarget(), ready,
			len(m.GetPartitions()), lag, fmtDur(time.Duration(maxLag*float64(time.Second))), failing, orDash(oneLine(m.GetLastError())))
		topics := make([]string, 0, len(m.GetTopicErrors()))
		for t := range m.GetTopicErrors() {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			topicErrs = append(topicErrs, fmt.Sprintf("mirror %s: topic %s not mirrored: %s", m.GetName(), t, oneLine(m.GetTopicErrors()[t])))
		}
		if lost > 0 {
			topicErrs = append(topicErrs, fmt.Sprintf("mirror %s: %d source offsets of %d partitions were deleted on the source before they were mirrored (skipped: gap policy continue)",
				m.GetName(), lost, gapped))
		}
	}
	_ = tw.Flush()
	if len(topicErrs) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(topicErrs, "\n"))
	}
}

// runClusters runs `switchyard ctl clusters`.
func (c *ctl) runClusters(ctx context.Context, args []string) error {
	fs := c.flagSet("clusters", clustersUsage)
	if err := c.noArgs(fs, args); err != nil {
		return err
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.client.ListClusters(cctx, &switchyardv1.ListClustersRequest{})
	if err != nil {
		return c.rpcErr("clusters", err)
	}
	if c.jsonOutput() {
		return c.printJSON(resp)
	}
	if len(resp.GetClusters()) == 0 {
		fmt.Fprintln(c.stdout, "no clusters")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBOOTSTRAP")
	for _, cl := range resp.GetClusters() {
		fmt.Fprintf(tw, "%s\t%s\n", cl.GetName(), strings.Join(cl.GetBootstrap(), ","))
	}
	return tw.Flush()
}
