package control

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// The two-phase cutover against fake sidecars whose usage (what their
// clients do) the tests set: "orders" produces to the topic orders, the
// group application "billing" reads it in group billing.

var perKeyGates = []switchyardv1.SidecarFeature{
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_REJECT_KEYS,
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_FETCH_WAITS_FOR_TRANSACTIONS,
}

func producerUsage(topics ...string) *switchyardv1.Usage {
	u := &switchyardv1.Usage{}
	for _, t := range topics {
		u.Topics = append(u.Topics, &switchyardv1.TopicUsage{Topic: t, Produced: true})
	}
	return u
}

func consumerUsage(group string, reads ...string) *switchyardv1.Usage {
	u := &switchyardv1.Usage{Groups: []*switchyardv1.GroupUsage{{Group: group, Protocol: "classic"}}}
	for _, t := range reads {
		u.Topics = append(u.Topics, &switchyardv1.TopicUsage{Topic: t, Fetched: true})
	}
	return u
}

// twoPhase connects a producer sidecar (orders/a) and a group member's
// sidecar (billing/x) reporting their usage.
func twoPhase(t *testing.T, p *plane) (prod, cons *fakeSidecar) {
	t.Helper()
	prod = connectSidecarWith(t, p, "orders", "a", "source", perKeyGates)
	cons = connectSidecarWith(t, p, "billing", "x", "source", perKeyGates)
	for _, s := range []*fakeSidecar{prod, cons} {
		s.mu.Lock()
		s.usage = producerUsage("orders")
		if s == cons {
			s.usage = consumerUsage("billing", "orders")
		}
		s.mu.Unlock()
	}
	// Created once both report their usage.
	waitUsage(t, p, "orders", "billing")
	return prod, cons
}

// waitUsage waits until the registry holds the usage of one sidecar of
// each of apps.
func waitUsage(t *testing.T, p *plane, apps ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sel, _ := p.reg.Usage(&switchyardv1.SidecarSelector{Apps: apps})
		if len(sel) == len(apps) && !slices.ContainsFunc(sel, func(s sidecarUsage) bool { return s.Usage == nil }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the usage of %v did not reach the registry", apps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func twoPhaseSpec() *switchyardv1.CutoverSpec {
	return &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders", "billing"}},
		Source:   "source", Target: "target",
		Policy: &switchyardv1.CutoverPolicy{AckTimeout: durationpb.New(2 * time.Second), DrainTimeout: durationpb.New(2 * time.Second),
			GroupDrainTimeout: durationpb.New(300 * time.Millisecond), QuiesceTimeout: durationpb.New(time.Minute)},
	}
}

// received renders what a sidecar was told, in order: cluster/held or
// refused keys (mode)/refused keys.
func received(s *fakeSidecar) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var seq []string
	for _, d := range s.received {
		g := d.GetGate()
		r := fmt.Sprintf("%s/%v", d.GetActiveCluster(), g.GetApiKeys())
		if g != nil {
			r += g.GetMode() + fmt.Sprint(g.GetRejectApiKeys())
		}
		seq = append(seq, r)
	}
	return strings.Join(seq, " ")
}

// waitState waits until a fake sidecar runs on cluster with gate nil.
func waitUngated(t *testing.T, s *fakeSidecar, cluster string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		active, gate := s.state()
		if active == cluster && gate == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar %s/%s on %s gate %v, want %s ungated", s.app, s.instance, active, gate, cluster)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func outcomes(c *switchyardv1.Cutover) string {
	var out []string
	for _, u := range c.GetCoverage().GetUnits() {
		out = append(out, fmt.Sprintf("%v:%d:%s", u.GetApps(), u.GetPhase(), u.GetOutcome()))
	}
	return strings.Join(out, " ")
}

// TestTwoPhaseProducersDoNotWaitForGroups: the group never commits the
// source's end (a one-phase cutover would roll back at its drain). The
// producers are gated, drained, flipped and released without waiting for
// it; then the group application is drained (in vain, bounded), quiesced,
// its offsets synced, flipped and released.
func TestTwoPhaseProducersDoNotWaitForGroups(t *testing.T) {
	fm := &fakeMirror{ready: true, caughtUp: true, groupBehind: "group billing at 5 of 10 on orders/0"}
	p := startPlane(t, "", fm)
	prod, cons := twoPhase(t, p)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: twoPhaseSpec()})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	if got, want := steps(c), "preflight gate drain flip release group-drain quiesce sync-groups group-flip group-release verify done"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	if got, want := received(prod), "/[] source/[0]HOLD[] target/[0]HOLD[] target/[]"; got != want {
		t.Errorf("producer told %s, want %s", got, want)
	}
	if got, want := received(cons), "/[] source/[0 8]HOLD[1] target/[0]HOLD[1] target/[1]REJECT[] target/[]"; got != want {
		t.Errorf("group member told %s, want %s", got, want)
	}
	waitUngated(t, prod, "target")
	waitUngated(t, cons, "target")
	if c.GetReleasedAt() == nil || c.GetGroupsQuiescedAt() == nil || !c.GetReleasedAt().AsTime().Before(c.GetGroupsQuiescedAt().AsTime()) {
		t.Errorf("producers released at %v, groups quiesced at %v: want the release first", c.GetReleasedAt(), c.GetGroupsQuiescedAt())
	}
	if c.GetGroupBlockWindow() == nil || c.GetGroupBlockWindow().AsDuration() <= 0 || c.GetGroupsReleasedAt() == nil {
		t.Errorf("group block window %v released %v", c.GetGroupBlockWindow(), c.GetGroupsReleasedAt())
	}
	if d := c.GetHistory()[5].GetDetail(); !strings.Contains(d, "not at the source's end") || !strings.Contains(d, "at 5 of 10") {
		t.Errorf("group drain detail %q: want the timeout and the group's position", d)
	}
	if len(c.GetGroupOffsets()) != 1 || fm.synced[0] != "billing" {
		t.Errorf("group offsets %v, synced %v", c.GetGroupOffsets(), fm.synced)
	}
	if got, want := outcomes(c), "[orders]:1:target [billing]:2:target"; got != want {
		t.Errorf("outcomes %s, want %s", got, want)
	}
}

// TestTwoPhaseQuiesceTimeoutRollsGroupsBack: the group application keeps
// a transaction open (a hung pipeline): its offsets never become final.
// The producers stay on the target; the application returns to the source
// ungated and the cutover fails, telling the operator how to move it.
func TestTwoPhaseQuiesceTimeoutRollsGroupsBack(t *testing.T) {
	p := startPlane(t, "", nil)
	prod, cons := twoPhase(t, p)
	cons.mu.Lock()
	cons.inFlightBy = map[int32]int64{produceKey: 1, endTxnKey: 1} // an open transaction
	cons.mu.Unlock()
	sp := twoPhaseSpec()
	sp.Policy.QuiesceTimeout = durationpb.New(500 * time.Millisecond)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_FAILED)
	if got, want := steps(c), "preflight gate drain flip release group-drain quiesce groups-rolling-back failed"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	for _, want := range []string{"offsets not final", "billing/x (1 transaction still open)",
		"re-run `switchyard ctl cutover start --app billing --from source --to target`"} {
		if !strings.Contains(c.GetError(), want) {
			t.Errorf("error %q lacks %q", c.GetError(), want)
		}
	}
	waitUngated(t, prod, "target")
	waitUngated(t, cons, "source")
	if got, want := outcomes(c), "[orders]:1:target [billing]:2:source"; got != want {
		t.Errorf("outcomes %s, want %s", got, want)
	}
}

// createAndWait creates a cutover of sp and waits until it is in step;
// it returns its id.
func createAndWait(t *testing.T, p *plane, sp *switchyardv1.CutoverSpec, step switchyardv1.CutoverStep) string {
	t.Helper()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	p.waitCutover(id, step)
	return id
}

// abortInQuiesce starts a cutover whose group application s has an offset
// commit that never ends, aborts it ("commit stuck") while the groups
// quiesce, and returns it once it ended in step end.
func abortInQuiesce(t *testing.T, p *plane, s *fakeSidecar, sp *switchyardv1.CutoverSpec, end switchyardv1.CutoverStep) *switchyardv1.Cutover {
	t.Helper()
	s.mu.Lock()
	s.inFlightBy = map[int32]int64{offsetCommitKey: 1} // a commit that does not end
	s.mu.Unlock()
	id := createAndWait(t, p, sp, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE)
	if _, err := p.client.AbortCutover(p.authed(), &switchyardv1.AbortCutoverRequest{Id: id, Reason: "commit stuck"}); err != nil {
		t.Fatal(err)
	}
	return p.waitCutover(id, end)
}

// TestTwoPhaseAbort: an abort while the groups quiesce returns them to
// the source (the producers stay on the target); from the groups' flip
// on an abort is refused.
func TestTwoPhaseAbort(t *testing.T) {
	t.Run("quiesce", func(t *testing.T) {
		p := startPlane(t, "", nil)
		prod, cons := twoPhase(t, p)
		c := abortInQuiesce(t, p, cons, twoPhaseSpec(), switchyardv1.CutoverStep_CUTOVER_STEP_FAILED)
		if got, want := steps(c), "preflight gate drain flip release group-drain quiesce groups-rolling-back failed"; got != want {
			t.Errorf("steps %q, want %q", got, want)
		}
		if !strings.HasPrefix(c.GetError(), "commit stuck; ") || !strings.Contains(c.GetError(), "--app billing") {
			t.Errorf("error %q", c.GetError())
		}
		waitUngated(t, prod, "target")
		waitUngated(t, cons, "source")
	})
	t.Run("group-flip", func(t *testing.T) {
		p := startPlane(t, "", nil)
		prod, cons := twoPhase(t, p)
		cons.mu.Lock()
		cons.stallTarget = true
		cons.mu.Unlock()
		resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: twoPhaseSpec()})
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetCutover().GetId()
		p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP)
		if _, err := p.client.AbortCutover(p.authed(), &switchyardv1.AbortCutoverRequest{Id: id}); status.Code(err) != codes.FailedPrecondition ||
			!strings.Contains(err.Error(), "point of no return for its groups") {
			t.Errorf("abort in group-flip: %v, want FAILED_PRECONDITION", err)
		}
		cons.mu.Lock()
		cons.stallTarget = false
		cons.mu.Unlock()
		c := p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
		if c.GetAbortRequested() {
			t.Error("a refused abort was recorded")
		}
		waitUngated(t, prod, "target")
		waitUngated(t, cons, "target")
	})
}

// TestTwoPhaseRestart stops the control plane while the cutover waits in
// a step and starts another on the same store: before the producers'
// release it rolls everything back; while the groups drain it drains them
// again; while they quiesce or sync it quiesces them again; from their flip
// on it goes on.
func TestTwoPhaseRestart(t *testing.T) {
	for _, tc := range []struct {
		at    switchyardv1.CutoverStep
		hold  func(fm *fakeMirror, cons *fakeSidecar) // keeps the cutover in the step
		let   func(fm *fakeMirror, cons *fakeSidecar) // lets it go on
		want  switchyardv1.CutoverStep
		steps string
		prod  string // where the sidecars end
		cons  string
	}{
		{at: switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN,
			hold: func(fm *fakeMirror, _ *fakeSidecar) { fm.caughtUp = false },
			let:  func(fm *fakeMirror, _ *fakeSidecar) { fm.caughtUp = true },
			want: switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, steps: "preflight gate drain rolling-back rolled-back",
			prod: "source", cons: "source"},
		{at: switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN,
			hold:  func(fm *fakeMirror, _ *fakeSidecar) { fm.groupBehind = "group billing at 5 of 10" },
			let:   func(fm *fakeMirror, _ *fakeSidecar) { fm.groupBehind = "" }, // the drain resumes and ends
			want:  switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
			steps: "preflight gate drain flip release group-drain quiesce sync-groups group-flip group-release verify done",
			prod:  "target", cons: "target"},
		{at: switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE,
			hold:  func(_ *fakeMirror, cons *fakeSidecar) { cons.inFlightBy = map[int32]int64{txnOffsetCommitKey: 1} },
			let:   func(_ *fakeMirror, cons *fakeSidecar) { cons.inFlightBy = nil },
			want:  switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
			steps: "preflight gate drain flip release group-drain quiesce quiesce sync-groups group-flip group-release verify done",
			prod:  "target", cons: "target"},
		{at: switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
			hold:  func(_ *fakeMirror, cons *fakeSidecar) { cons.stallTarget = true },
			let:   func(_ *fakeMirror, cons *fakeSidecar) { cons.stallTarget = false },
			want:  switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
			steps: "preflight gate drain flip release group-drain quiesce sync-groups group-flip group-release verify done",
			prod:  "target", cons: "target"},
		{at: switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK,
			hold: func(_ *fakeMirror, cons *fakeSidecar) {
				cons.inFlightBy = map[int32]int64{offsetCommitKey: 1}
			},
			want: switchyardv1.CutoverStep_CUTOVER_STEP_FAILED, steps: "preflight gate drain flip release group-drain quiesce groups-rolling-back failed",
			prod: "target", cons: "source"},
	} {
		t.Run(StepName(tc.at), func(t *testing.T) {
			dir := t.TempDir()
			fm := &fakeMirror{ready: true, caughtUp: true}
			p := startPlane(t, dir, fm)
			prod, cons := twoPhase(t, p)
			fm.mu.Lock()
			cons.mu.Lock()
			tc.hold(fm, cons)
			cons.mu.Unlock()
			fm.mu.Unlock()
			sp := twoPhaseSpec()
			sp.Policy.GroupDrainTimeout = durationpb.New(time.Minute)
			sp.Policy.DrainTimeout = durationpb.New(time.Minute)
			sp.Policy.AckTimeout = durationpb.New(time.Minute)
			if tc.at == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK {
				sp.Policy.QuiesceTimeout = durationpb.New(300 * time.Millisecond)
			}
			resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetCutover().GetId()
			if tc.at == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK {
				// The rollback waits for the member's sidecar, which stalls
				// once it applied the quiesce gate.
				p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE)
				deadline := time.Now().Add(10 * time.Second)
				for {
					cons.mu.Lock()
					if g := cons.gate; g != nil && slices.Contains(g.GetApiKeys(), offsetCommitKey) {
						cons.stall = true
					}
					stalled := cons.stall
					cons.mu.Unlock()
					if stalled {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the member's sidecar was not quiesced")
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			p.waitCutover(id, tc.at)
			// Stored in the step; the plane stops there.
			p.stop()
			prod.close()
			cons.close()

			p2 := startPlane(t, dir, fm)
			prod2, cons2 := twoPhase(t, p2)
			fm.mu.Lock()
			cons2.mu.Lock()
			tc.hold(fm, cons2)
			if tc.let != nil {
				tc.let(fm, cons2)
			}
			cons2.mu.Unlock()
			fm.mu.Unlock()
			c := p2.waitCutover(id, tc.want)
			if got := steps(c); got != tc.steps {
				t.Errorf("steps %q, want %q", got, tc.steps)
			}
			if tc.want == switchyardv1.CutoverStep_CUTOVER_STEP_DONE && c.GetError() != "" {
				t.Errorf("a cutover that resumed and finished carries the error %q", c.GetError())
			}
			waitUngated(t, prod2, tc.prod)
			waitUngated(t, cons2, tc.cons)
		})
	}
}

// pipelineAlone connects the sidecar of one application (copy/x) that
// reads orders in group billing and writes invoices — a
// consume-transform-produce pipeline, transactional or not — as the only
// application of a cutover.
func pipelineAlone(t *testing.T, transactional bool) (*plane, *fakeMirror, *fakeSidecar, *switchyardv1.CutoverSpec) {
	t.Helper()
	fm := &fakeMirror{ready: true, caughtUp: true, copying: []string{"invoices"}}
	p := startPlane(t, "", fm)
	s := connectSidecarWith(t, p, "copy", "x", "source", perKeyGates)
	u := consumerUsage("billing", "orders")
	u.Groups[0].Transactional = transactional
	u.Topics = append(u.Topics, &switchyardv1.TopicUsage{Topic: "invoices", Produced: true})
	s.mu.Lock()
	s.usage = u
	s.mu.Unlock()
	waitUsage(t, p, "copy")
	sp := twoPhaseSpec()
	sp.Selector.Apps = []string{"copy"}
	return p, fm, s, sp
}

// TestPhaseTwoOnly: a cutover whose only application has a consumer group
// and writes — a pipeline moved alone — skips the producers' steps (a
// one-phase drain would wait for a group whose commits wait for its held
// writes: the deadlock of issue 13). A pipeline that commits outside
// transactions has its Produce held from the group drain on, so that what
// it reads stands still; a transactional one is gated at the quiesce, its
// open transaction passing. Its producers' block window is measured; an
// abort before the groups' flip rolls the cutover back, nothing having
// moved.
func TestPhaseTwoOnly(t *testing.T) {
	for _, tc := range []struct {
		name          string
		transactional bool
		told          string
	}{
		{"at-least-once", false, "/[] source/[0]HOLD[] source/[0 8]HOLD[1] target/[0]HOLD[1] target/[1]REJECT[] target/[]"},
		{"transactional", true, "/[] source/[0 8]HOLD[1] target/[0]HOLD[1] target/[1]REJECT[] target/[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, fm, s, sp := pipelineAlone(t, tc.transactional)
			resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
			if err != nil {
				t.Fatal(err)
			}
			c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
			if got, want := steps(c), "preflight group-drain quiesce sync-groups group-flip group-release verify done"; got != want {
				t.Errorf("steps %q, want %q", got, want)
			}
			if got := received(s); got != tc.told {
				t.Errorf("pipeline told %s, want %s", got, tc.told)
			}
			waitUngated(t, s, "target")
			if d := c.GetHistory()[1].GetDetail(); strings.Contains(d, "gated") != !tc.transactional {
				t.Errorf("group drain detail %q", d)
			}
			if !TwoPhase(c) || HasProducerPhase(c) || c.GetCoverage().GetUnits()[0].GetTransactional() != tc.transactional {
				t.Errorf("coverage %v", c.GetCoverage())
			}
			if c.GetBlockWindow().AsDuration() <= 0 || c.GetGatedAt() == nil || c.GetReleasedAt() == nil ||
				c.GetGatedAt().AsTime() != c.GetGroupsQuiescedAt().AsTime() {
				t.Errorf("producers' block window %v (gated %v, released %v, groups quiesced %v)",
					c.GetBlockWindow(), c.GetGatedAt(), c.GetReleasedAt(), c.GetGroupsQuiescedAt())
			}
			fm.mu.Lock()
			if len(fm.synced) != 1 || fm.synced[0] != "billing" || !slices.Equal(fm.prepared, []string{"billing"}) {
				t.Errorf("synced %v, prepared %v: want the target's coordinator readied for billing and its offsets synced", fm.synced, fm.prepared)
			}
			fm.mu.Unlock()
			if got, want := outcomes(c), "[copy]:2:target"; got != want {
				t.Errorf("outcomes %s, want %s", got, want)
			}
		})
	}
	t.Run("abort", func(t *testing.T) {
		p, _, s, sp := pipelineAlone(t, false)
		c := abortInQuiesce(t, p, s, sp, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
		if got, want := steps(c), "preflight group-drain quiesce groups-rolling-back rolled-back"; got != want {
			t.Errorf("steps %q, want %q", got, want)
		}
		if c.GetError() != "commit stuck" {
			t.Errorf("error %q, want the abort's reason alone (no producers moved, nothing to re-run)", c.GetError())
		}
		waitUngated(t, s, "source")
		if got, want := outcomes(c), "[copy]:2:source"; got != want {
			t.Errorf("outcomes %s, want %s", got, want)
		}
	})
}

// TestGroupDrainWaitsForAdmittedProduce: the produce a pipeline's sidecar
// admitted before the group drain's gate still lands on the source; a
// group that committed the end before it would read those records and,
// its commits held from the quiesce on, read them again on the target. The
// group drain waits for it (here in vain, bounded) before it asks whether
// the groups are at the end.
func TestGroupDrainWaitsForAdmittedProduce(t *testing.T) {
	p, _, s, sp := pipelineAlone(t, false)
	s.mu.Lock()
	s.inFlightBy = map[int32]int64{produceKey: 1}
	s.mu.Unlock()
	id := createAndWait(t, p, sp, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE)
	s.mu.Lock()
	s.inFlightBy = nil
	s.mu.Unlock()
	c := p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	if d := c.GetHistory()[1].GetDetail(); !strings.Contains(d, "produce still in flight") || !strings.Contains(d, "copy/x (1 produce request in flight)") {
		t.Errorf("group drain detail %q: want it to have waited for the produce in flight", d)
	}
}

// TestVerifyIgnoresInputWritersOutsideTheCutover: the pipeline moved
// alone reads a topic whose producer the cutover does not move; the mirror
// goes on copying it, so the source's end of it keeps moving after the
// flip. Verify proves that nothing bypasses the sidecars on what the moved
// application writes, and does not fail the cutover over its input.
func TestVerifyIgnoresInputWritersOutsideTheCutover(t *testing.T) {
	p, fm, _, sp := pipelineAlone(t, true)
	fm.mu.Lock()
	fm.growing = []string{"orders"}
	fm.mu.Unlock()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	if got, want := verifyTopics(c.GetCoverage(), c.GetSpec()), []string{"invoices"}; !slices.Equal(got, want) {
		t.Errorf("verify checks %v, want %v", got, want)
	}
	// The spec's topics count unless a moved application reads them.
	sp3 := &switchyardv1.CutoverSpec{Topics: []string{"orders", "audit"}}
	if got, want := verifyTopics(c.GetCoverage(), sp3), []string{"audit", "invoices"}; !slices.Equal(got, want) {
		t.Errorf("verify checks %v with spec topics %v, want %v", got, sp3.GetTopics(), want)
	}
	if got := verifyTopics(nil, sp3); got != nil {
		t.Errorf("without coverage verify checks %v, want nil (every mirrored topic)", got)
	}
}

// TestSyncGroupsWaitsForTheMirror: the input of a pipeline moved alone
// keeps growing on the source (its producer is not selected), so the
// group's final offset may lie past what the mirror has copied when the
// groups sync. The offsets are final and the mirror gets there: the sync
// is tried again until it does, instead of rolling the cutover back.
func TestSyncGroupsWaitsForTheMirror(t *testing.T) {
	p, fm, _, sp := pipelineAlone(t, true)
	fm.mu.Lock()
	fm.beyond = 3
	fm.mu.Unlock()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if len(fm.synced) != 4 {
		t.Errorf("synced %v: want three syncs beyond the mirror's position, then one exact", fm.synced)
	}
	if len(c.GetGroupOffsets()) != 1 || c.GetGroupOffsets()[0].GetTarget() != 12 {
		t.Errorf("group offsets %v", c.GetGroupOffsets())
	}
}
