package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// Two-phase cutovers. When a cutover's coverage has units with consumer
// groups (or group-less reads), they move in a phase of their own: the
// producers (phase 1) go through GATE, DRAIN, FLIP and RELEASE alone —
// their drain waits for no consumer group — and the applications with
// groups (phase 2) follow: GROUP_DRAIN, QUIESCE, SYNC_GROUPS, GROUP_FLIP,
// GROUP_RELEASE. A cutover whose every application is in phase 2 (a
// pipeline or a Streams application moved alone, consumers moved before
// their producers) skips phase 1: its drain must not wait for groups to
// reach an end that their own held writes keep them from. Each phase has
// its own registry rule, "<id>/p1" and "<id>/p2", over the phase's
// applications and the selector's labels; units are whole applications,
// so the two rules select disjoint sidecars. docs/DESIGN.md, "Moving
// producers and groups separately", argues the order.

// Kafka API keys the quiesce gate and its finality check name.
const (
	offsetCommitKey    = 8
	txnOffsetCommitKey = 28
)

// pass is what one pass of a cutover moves: the sidecars one of its rules
// puts into a state.
type pass struct {
	// phase: 0 for the whole selection (a one-phase cutover), 1 for the
	// producers, 2 for the applications with groups.
	phase int32
	rule  string
	sel   *switchyardv1.SidecarSelector
	keys  []string // the selected sidecars the rule covers
}

// ruleIDs are the ids of every rule a cutover may own: its one-phase rule
// and the rules of its two phases.
func ruleIDs(id string) []string { return []string{id, id + "/p1", id + "/p2"} }

// TwoPhase reports whether a cutover moves its applications with consumer
// groups in a phase of their own, after its producers (if any): its
// coverage has units of phase 2 and every group it moves is used through
// a selected sidecar. Otherwise (producers only; groups the spec names that
// no selected sidecar reports, whose members cannot be quiesced; a cutover
// stored before coverage existed) it moves everything in one pass.
func TwoPhase(c *switchyardv1.Cutover) bool {
	cov := c.GetCoverage()
	return len(phaseUnits(cov, 2)) > 0 && len(cov.GetUnplacedGroups()) == 0
}

// HasProducerPhase reports whether a cutover runs phase 1 (GATE, DRAIN,
// FLIP, RELEASE): it is one-phase, or some selected application is not in
// phase 2 — a producer, or an application no connected sidecar reported
// on, which phase 1's rule covers should one connect.
func HasProducerPhase(c *switchyardv1.Cutover) bool {
	if !TwoPhase(c) {
		return true
	}
	return len(phaseApps(c.GetCoverage(), c.GetSpec(), 1)) > 0
}

// phaseApps returns the selected applications of a phase, in the
// selector's order: those of its units for phase 2, the others for phase 1.
func phaseApps(cov *switchyardv1.CutoverCoverage, spec *switchyardv1.CutoverSpec, phase int32) []string {
	late := unitNames(phaseUnits(cov, 2), (*switchyardv1.CutoverUnit).GetApps)
	var out []string
	for _, a := range spec.GetSelector().GetApps() {
		if late[a] == (phase == 2) {
			out = append(out, a)
		}
	}
	return out
}

// afterPreflight is the step a cutover enters when its preflight passed:
// GATE, or GROUP_DRAIN when it has no producer phase.
func afterPreflight(c *switchyardv1.Cutover) switchyardv1.CutoverStep {
	if HasProducerPhase(c) {
		return switchyardv1.CutoverStep_CUTOVER_STEP_GATE
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN
}

// groupsMayRollBack reports whether c is in a step of its second phase
// from which a failure, an abort or a restart returns the groups'
// applications to the source: before their flip.
func groupsMayRollBack(c *switchyardv1.Cutover) bool {
	switch c.GetStep() {
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE:
		return true
	case switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS:
		return TwoPhase(c)
	}
	return false
}

// coverage returns the cutover's coverage as last published.
func (ct *Controller) coverage(run *cutoverRun) *switchyardv1.CutoverCoverage {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return run.c.GetCoverage()
}

// passOf returns a pass of the cutover: phase 0 is the whole selection
// under the cutover's own rule; 1 and 2 are its phases. Selected
// applications no unit names (no sidecar of theirs was connected) belong
// to phase 1: the rule covers them should one connect.
func (ct *Controller) passOf(run *cutoverRun, phase int32) pass {
	ct.mu.Lock()
	c := run.c
	ct.mu.Unlock()
	spec := c.GetSpec()
	if phase == 0 {
		return pass{rule: run.id, sel: spec.GetSelector(), keys: run.keys}
	}
	p := pass{phase: phase, rule: fmt.Sprintf("%s/p%d", run.id, phase),
		sel: &switchyardv1.SidecarSelector{Labels: maps.Clone(spec.GetSelector().GetLabels()),
			Apps: phaseApps(c.GetCoverage(), spec, phase)}}
	for _, k := range run.keys {
		if app, _, _ := cutKey(k); slices.Contains(p.sel.Apps, app) {
			p.keys = append(p.keys, k)
		}
	}
	return p
}

// twoPhase reports whether the cutover runs in two phases (TwoPhase).
func (ct *Controller) twoPhase(run *cutoverRun) bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return TwoPhase(run.c)
}

// firstPass is what GATE, DRAIN, FLIP and RELEASE move: the producers of
// a two-phase cutover, else everything.
func (ct *Controller) firstPass(run *cutoverRun) pass {
	if ct.twoPhase(run) {
		return ct.passOf(run, 1)
	}
	return ct.passOf(run, 0)
}

// passes are every pass whose rule a rollback may have to undo.
func (ct *Controller) passes(run *cutoverRun) []pass {
	return []pass{ct.passOf(run, 0), ct.passOf(run, 1), ct.passOf(run, 2)}
}

// phaseTopics returns the topics whose writers a phase moves, which the
// mirror must have copied completely before they flip: what its units
// write; for phase 1 also the spec's topics no phase-2 unit writes.
func phaseTopics(cov *switchyardv1.CutoverCoverage, spec *switchyardv1.CutoverSpec, phase int32) []string {
	late := unitNames(phaseUnits(cov, 2), (*switchyardv1.CutoverUnit).GetWrites)
	if phase == 2 {
		return sortedNames(late)
	}
	set := unitNames(phaseUnits(cov, 1), (*switchyardv1.CutoverUnit).GetWrites)
	for _, t := range spec.GetTopics() {
		if !late[t] {
			set[t] = true
		}
	}
	return sortedNames(set)
}

// phaseWrites returns the topics the mirror must have copied completely
// before a phase's writers flip: phaseTopics, and every topic the phase's
// sidecars report their clients wrote by now. The coverage is computed
// when the cutover starts, from the reports then; a client that wrote a
// topic for the first time since (a producer idle at preflight, or whose
// report had not arrived) has records on the source the mirror must copy
// before the client writes on the target, or they would land after its
// new ones — and a group's translated offset would pass over the new
// ones. Called once the phase's sidecars have reported with its gate or
// quiesce applied, so the reports hold every write that reached the
// source.
//
// A topic the other phase's units write too is an error: writers of one
// topic on both clusters at once interleave on the target; they must move
// in one unit, which a new cutover computes from the reports now.
func (ct *Controller) phaseWrites(run *cutoverRun, phase int32) ([]string, error) {
	spec, cov := ct.spec(run), ct.coverage(run)
	set := map[string]bool{}
	for _, t := range phaseTopics(cov, spec, phase) {
		set[t] = true
	}
	other := unitNames(phaseUnits(cov, 3-phase), (*switchyardv1.CutoverUnit).GetWrites)
	if phase == 2 {
		for t := range ct.reg.Writes(ct.passOf(run, 1).keys) {
			other[t] = true
		}
	}
	fresh := ct.reg.Writes(ct.passOf(run, phase).keys)
	var conflicts, learned []string
	for _, t := range slices.Sorted(maps.Keys(fresh)) {
		switch {
		case other[t]:
			conflicts = append(conflicts, fmt.Sprintf("%s (by %s)", t, strings.Join(fresh[t], ", ")))
		case !set[t]:
			set[t] = true
			learned = append(learned, t)
		}
	}
	if len(conflicts) > 0 {
		return nil, fmt.Errorf("the sidecars of phase %d report writing %s, which the coverage computed at the start did not show and the applications of phase %d write too: "+
			"the writers of a topic must move together; start the cutover again to move them as one unit", phase, strings.Join(conflicts, "; "), 3-phase)
	}
	if len(learned) > 0 {
		m := ct.mirrorOf(run)
		if _, err := ensureMirrored(ct.ctx, m, m.Mirror.Status(), learned); err != nil {
			return nil, fmt.Errorf("the sidecars of phase %d report writing %v, which the coverage computed at the start did not show: %w", phase, learned, err)
		}
	}
	return sortedNames(set), nil
}

// phaseReads returns the topics the units of a phase read.
func phaseReads(cov *switchyardv1.CutoverCoverage, phase int32) []string {
	return sortedNames(unitNames(phaseUnits(cov, phase), (*switchyardv1.CutoverUnit).GetReads))
}

// callContext returns a context for cluster calls of a step: it ends at
// deadline, when the cutover is aborted, or when the controller stops.
func (ct *Controller) callContext(run *cutoverRun, deadline time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(ct.ctx, deadline)
	go func() {
		select {
		case <-run.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// waitCaughtUp waits until the mirror has copied everything the source
// holds of topics (none: nothing to wait for), until deadline or an
// abort; it returns what was still behind.
func (ct *Controller) waitCaughtUp(run *cutoverRun, m *MirrorRef, topics []string, deadline time.Time) (string, error) {
	if len(topics) == 0 {
		return "", nil
	}
	callCtx, stop := ct.callContext(run, deadline)
	defer stop()
	var behind string
	err := ct.poll(run, time.Until(deadline), true, false, func() (bool, error) {
		ctx, cancel := context.WithTimeout(callCtx, 10*time.Second)
		defer cancel()
		ok, b, err := m.Mirror.CaughtUp(ctx, topics...)
		if err != nil {
			// A cluster that does not answer for a moment is "not yet";
			// the deadline decides.
			behind = fmt.Sprintf("(%v)", err)
			return false, nil
		}
		behind = b
		lag, _ := mirrorLag(m.Mirror.Status(), topics)
		ct.update(run, func(c *switchyardv1.Cutover) { c.MirrorLag = lag })
		return ok, nil
	})
	if err == nil {
		ct.update(run, func(c *switchyardv1.Cutover) { c.MirrorLag = 0 })
	}
	return behind, err
}

// groupDrain lets the consumer groups of the second phase consume their
// input to the end: the producers of what they read moved in the first
// phase (or are not selected), and a group that committed the source's end
// crosses without reading anything twice. It is bounded by
// policy.group_drain_timeout and never fails: a group still behind then
// is quiesced where it is (what it consumed and did not commit is read
// again on the target).
//
// A pipeline that commits outside transactions has its Produce gated
// first (drainGated): an application that reads what it writes (a Streams
// repartition topic, an app consuming its own output) would otherwise move
// the end it drains to for ever. Transactional pipelines are not gated:
// they commit only inside a transaction, which the gate would keep from
// starting, and their offsets are final at any transaction boundary.
func (ct *Controller) groupDrain(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	next := switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE
	groups := ct.groupsOf(run)
	limit := spec.GetPolicy().GetGroupDrainTimeout().AsDuration()
	switch {
	case len(groups) == 0:
		return next, "no consumer groups", nil
	case limit <= 0:
		ct.countGroupDrain("skipped")
		return next, "policy.group_drain_timeout is 0: the groups are quiesced where they are", nil
	}
	deadline := time.Now().Add(limit)
	gated := ""
	if writers := drainGated(ct.coverage(run)); len(writers) > 0 {
		sc := ct.passOf(run, 2)
		ct.update(run, markGroupsGated)
		v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetSource(), ct.gateOf(spec))
		if err != nil {
			return 0, "", err
		}
		if _, err := ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), true); err != nil {
			return 0, "", fmt.Errorf("group drain: %w", err)
		}
		gated = fmt.Sprintf("produce of %v gated so that their input stands still; ", writers)
		// What was admitted before the gate lands first: a group that
		// committed the end before it would read it and not commit it.
		busy, err := ct.waitNoProduce(run, sc.keys, v, deadline)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			ct.countGroupDrain("timeout")
			return next, fmt.Sprintf("%sproduce still in flight after policy.group_drain_timeout %v on %s: the groups are quiesced where they are",
				gated, limit, strings.Join(busy, ", ")), nil
		case err != nil:
			return 0, "", err
		}
	}
	m := ct.mirrorOf(run)
	reads := phaseReads(ct.coverage(run), 2)
	behind, err := ct.waitGroupsDrained(run, m, groups, reads, deadline)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		ct.countGroupDrain("timeout")
		return next, fmt.Sprintf("%sgroups %v not at the source's end within policy.group_drain_timeout %v (%s): quiesced where they are; "+
			"what they consumed and did not commit is read again on the target", gated, groups, limit, behind), nil
	case err != nil:
		return 0, "", err
	}
	ct.countGroupDrain("end")
	return next, fmt.Sprintf("%sgroups %v committed the source's end", gated, groups), nil
}

// drainGated returns the applications of the second phase whose Produce
// the group drain gates: those of pipelines that do not commit inside
// transactions.
func drainGated(cov *switchyardv1.CutoverCoverage) []string {
	var apps []string
	for _, u := range phaseUnits(cov, 2) {
		if u.GetRole() == rolePipeline && !u.GetTransactional() {
			apps = append(apps, u.GetApps()...)
		}
	}
	return apps
}

// waitGroupsDrained waits until the groups have committed the source's
// end of topics (Mirror.GroupsDrained), until deadline or an abort; it
// returns the last reason they had not.
func (ct *Controller) waitGroupsDrained(run *cutoverRun, m *MirrorRef, groups, topics []string, deadline time.Time) (string, error) {
	callCtx, stop := ct.callContext(run, deadline)
	defer stop()
	var behind string
	err := ct.poll(run, time.Until(deadline), true, false, func() (bool, error) {
		ctx, cancel := context.WithTimeout(callCtx, 10*time.Second)
		defer cancel()
		ok, b, err := m.Mirror.GroupsDrained(ctx, groups, topics...)
		if err != nil {
			// A check the deadline cut short says nothing of the groups:
			// keep the last reason that did.
			if behind == "" || ctx.Err() == nil {
				behind = fmt.Sprintf("(%v)", err)
			}
			return false, nil
		}
		behind = b
		return ok, nil
	})
	return behind, err
}

// countGroupDrain counts how a groups' drain ended.
func (ct *Controller) countGroupDrain(outcome string) {
	ct.mu.Lock()
	m := ct.m
	ct.mu.Unlock()
	if m != nil {
		m.groupDrains.WithLabelValues(outcome).Inc()
	}
}

// quiesceGate is the gate that makes a group application's committed
// offsets final: Produce (and so the start of a transaction) and
// OffsetCommit held, in the policy's mode; Fetch refused, except while a
// transaction is open through the sidecar (it may need more input to
// reach its end). Requests of an open transaction pass every gate, so
// open transactions end; heartbeats and rebalances pass, so the group
// stays healthy on the source.
func (ct *Controller) quiesceGate(spec *switchyardv1.CutoverSpec) *gateSpec {
	g := ct.gateOf(spec)
	g.APIKeys = append(g.APIKeys, offsetCommitKey)
	if g.Mode == "HOLD" {
		g.RejectKeys = []int32{fetchKey}
	} else {
		g.APIKeys = append(g.APIKeys, fetchKey)
	}
	g.FetchWaitsForTransactions = true
	return g
}

// quiesce gates the second phase's sidecars (quiesceGate) and waits until
// every one of them reports, with the gate applied, no Produce (no open
// transaction), no OffsetCommit and no TxnOffsetCommit in flight: nothing
// can change the groups' committed offsets on the source any more — they
// are final, wherever they are. Bounded by policy.quiesce_timeout.
func (ct *Controller) quiesce(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.passOf(run, 2)
	ct.update(run, markGroupsGated) // unless the group drain gated them first
	v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetSource(), ct.quiesceGate(spec))
	if err != nil {
		return 0, "", err
	}
	detail, err := ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), true)
	if err != nil {
		return 0, "", fmt.Errorf("quiesce: %w", err)
	}
	limit := spec.GetPolicy().GetQuiesceTimeout().AsDuration()
	busy, err := ct.waitReports(run, sc.keys, v, "the quiesce gate", time.Now().Add(limit), func(st *switchyardv1.ProxyStatus) string {
		if final(st) {
			return ""
		}
		return quiesceBusy(st)
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "", fmt.Errorf("offsets not final within policy.quiesce_timeout %v on %s", limit, strings.Join(busy, ", "))
	}
	if err != nil {
		return 0, "", err
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, detail + "; offsets final: no commit in flight, no transaction open", nil
}

// final reports whether a sidecar's status shows nothing in flight that
// could still change a group's committed offsets.
func final(st *switchyardv1.ProxyStatus) bool {
	in := st.GetInFlightByApi()
	return in[produceKey] == 0 && in[offsetCommitKey] == 0 && in[txnOffsetCommitKey] == 0
}

// quiesceBusy says what keeps a sidecar's offsets from being final.
func quiesceBusy(st *switchyardv1.ProxyStatus) string {
	in := st.GetInFlightByApi()
	parts := []string{}
	if s := drainBusy(st); s != "" {
		parts = append(parts, s)
	}
	if n := in[offsetCommitKey]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d offset %s in flight", n, plural(n, "commit", "commits")))
	}
	if n := in[txnOffsetCommitKey]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d transactional offset %s in flight", n, plural(n, "commit", "commits")))
	}
	return strings.Join(parts, ", ")
}

// groupFlip switches the second phase's sidecars to the target, Produce
// held and Fetch refused (flipGate): offsets are final and synced. From
// here on the groups go forward only.
func (ct *Controller) groupFlip(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.passOf(run, 2)
	v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetTarget(), ct.flipGate(spec, ct.groupsOf(run)))
	if err != nil {
		return 0, "", err
	}
	detail, err := ct.waitAcks(run, sc.keys, v, 3*spec.GetPolicy().GetAckTimeout().AsDuration(), false)
	if err != nil {
		return 0, "", fmt.Errorf("group flip: %w (they switch when they reconnect)", err)
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, detail, nil
}

// markGroupsGated records when the second phase's applications were first
// gated; in a cutover without a producer phase that is also when its
// producers (the pipelines among them) were.
func markGroupsGated(c *switchyardv1.Cutover) {
	now := timestamppb.Now()
	if c.GroupsQuiescedAt == nil {
		c.GroupsQuiescedAt = now
	}
	if c.GatedAt == nil && !HasProducerPhase(c) {
		c.GatedAt = now
	}
}

// groupRelease lifts the second phase's gates on the target: Produce and
// commits at once, Fetch once the groups have rejoined there. In a cutover
// without a producer phase, the release of Produce ends the producers'
// block window.
func (ct *Controller) groupRelease(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	sc := ct.passOf(run, 2)
	detail, err := ct.releaseOnTarget(run, sc, ct.groupsOf(run), func(now time.Time) {
		ct.update(run, func(c *switchyardv1.Cutover) {
			if HasProducerPhase(c) || c.GatedAt == nil {
				return
			}
			c.ReleasedAt = timestamppb.New(now)
			c.BlockWindow = durationpb.New(now.Sub(c.GatedAt.AsTime()))
		})
	})
	now := time.Now()
	ct.update(run, func(c *switchyardv1.Cutover) {
		c.GroupsReleasedAt = timestamppb.New(now)
		if c.GroupsQuiescedAt != nil {
			c.GroupBlockWindow = durationpb.New(now.Sub(c.GroupsQuiescedAt.AsTime()))
		}
	})
	if err != nil {
		return 0, "", err
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY, detail, nil
}

// groupsRollback returns the second phase's sidecars to the source with
// no gate (they never left it). A cutover whose producers moved fails,
// naming the applications left on the source; one without a producer
// phase moved nothing and is rolled back.
func (ct *Controller) groupsRollback(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.passOf(run, 2)
	detail := "nothing to undo: no group application was quiesced"
	if ct.reg.HasRule(sc.rule) {
		v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetSource(), nil)
		if err != nil {
			return 0, "", err
		}
		if detail, err = ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), false); err != nil {
			detail += "; the others apply the rollback when they reconnect"
		}
	}
	ct.mu.Lock()
	producers := HasProducerPhase(run.c)
	ct.mu.Unlock()
	if !producers {
		return switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, detail, nil
	}
	hint := ct.rerunHint(run, sc)
	ct.update(run, func(c *switchyardv1.Cutover) {
		if !strings.Contains(c.GetError(), hint) {
			c.Error = strings.TrimPrefix(c.GetError()+"; "+hint, "; ")
		}
	})
	return switchyardv1.CutoverStep_CUTOVER_STEP_FAILED, detail, nil
}

// rerunHint tells the operator how to move the applications a two-phase
// cutover left on the source.
func (ct *Controller) rerunHint(run *cutoverRun, sc pass) string {
	spec := ct.spec(run)
	cmd := fmt.Sprintf("switchyard ctl cutover start --app %s", strings.Join(sc.sel.GetApps(), ","))
	for _, k := range slices.Sorted(maps.Keys(sc.sel.GetLabels())) {
		cmd += fmt.Sprintf(" --label %s=%s", k, sc.sel.GetLabels()[k])
	}
	cmd += fmt.Sprintf(" --from %s --to %s", spec.GetSource(), spec.GetTarget())
	return fmt.Sprintf("the producers run on %s; %v remain on %s, ungated: re-run `%s` to move them",
		spec.GetTarget(), sc.sel.GetApps(), spec.GetSource(), cmd)
}

// releaseOnTarget lifts a pass's gates on the target: Produce (and
// commits) at once; with groups, Fetch once they have rejoined there —
// a consumer that fetched with the position it had on the source would
// read the wrong records. released, if not nil, is called when the
// sidecars have acknowledged (or failed to acknowledge) the first release.
func (ct *Controller) releaseOnTarget(run *cutoverRun, sc pass, groups []string, released func(time.Time)) (string, error) {
	spec := ct.spec(run)
	var consumers *gateSpec
	if len(groups) > 0 {
		consumers = &gateSpec{APIKeys: []int32{fetchKey}, Mode: "REJECT"}
	}
	v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetTarget(), consumers)
	if err != nil {
		return "", err
	}
	detail, err := ct.waitAcks(run, sc.keys, v, 3*spec.GetPolicy().GetAckTimeout().AsDuration(), false)
	if released != nil {
		released(time.Now())
	}
	if err != nil {
		return "", fmt.Errorf("release: %w (they are released when they reconnect)", err)
	}
	if consumers == nil {
		return detail, nil
	}
	m := ct.mirrorOf(run)
	var behind string
	err = ct.poll(run, 3*spec.GetPolicy().GetDrainTimeout().AsDuration(), false, false, func() (bool, error) {
		ctx, cancel := context.WithTimeout(ct.ctx, 10*time.Second)
		defer cancel()
		ok, b, err := m.Mirror.GroupsJoined(ctx, groups)
		behind = b
		return ok, err
	})
	if err != nil {
		// Go on regardless: the consumers must not stay blocked; a group
		// that rejoins later still reads its committed offsets.
		ct.log.Warn("consumer groups not rejoined on the target; releasing fetches anyway", zap.String("id", run.id), zap.String("last", behind), zap.Error(err))
		detail += "; groups not rejoined in time: " + behind
	}
	v, err = ct.reg.SetRule(sc.rule, sc.sel, spec.GetTarget(), nil)
	if err != nil {
		return "", err
	}
	d2, err := ct.waitAcks(run, sc.keys, v, 3*spec.GetPolicy().GetAckTimeout().AsDuration(), false)
	if err != nil {
		return "", fmt.Errorf("release consumers: %w (they are released when they reconnect)", err)
	}
	return detail + "; groups rejoined on the target, consumers released: " + d2, nil
}

// mergeAcks returns the acknowledgements of the sidecars keys, in order:
// from fresh where it has one, else from prev.
func mergeAcks(keys []string, prev, fresh []*switchyardv1.SidecarAck) []*switchyardv1.SidecarAck {
	by := map[string]*switchyardv1.SidecarAck{}
	for _, a := range prev {
		by[a.GetApp()+"/"+a.GetInstance()] = a
	}
	for _, a := range fresh {
		by[a.GetApp()+"/"+a.GetInstance()] = a
	}
	out := make([]*switchyardv1.SidecarAck, 0, len(keys))
	for _, k := range keys {
		if a := by[k]; a != nil {
			out = append(out, a)
		}
	}
	return out
}

// setOutcomes records where each unit of c ended, as c moves from step
// from to the final step to.
func setOutcomes(c *switchyardv1.Cutover, from, to switchyardv1.CutoverStep) {
	two := TwoPhase(c)
	for _, u := range c.GetCoverage().GetUnits() {
		var where string
		switch to {
		case switchyardv1.CutoverStep_CUTOVER_STEP_DONE:
			where = "target"
		case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK:
			where = "source"
		case switchyardv1.CutoverStep_CUTOVER_STEP_FAILED:
			switch {
			case two && (from == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK || from == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE):
				// The producers released; the groups never left the source.
				where = "target"
				if u.GetPhase() == 2 {
					where = "source"
				}
			case from == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, from == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
				from == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, from == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
				where = "target"
			}
		}
		u.Outcome = where
	}
}
