//go:build unix

package crashtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// preflightAttempts runs the preflight transition. Nothing in preflight
// waits on anything the test could hold (it takes a few milliseconds
// before gate is stored), so cutovers are started one after the other,
// each killed at the plan's moment after CreateCutover is sent, until a
// kill lands with the store holding preflight. Every attempt is checked
// like any transition (outcome by what the store held, sidecars back on
// the source without a gate, producers producing, switches and gates);
// the last attempt's cutover goes on to the record checks.
func (sc *scenario) preflightAttempts() *switchyardv1.Cutover {
	var (
		final       *switchyardv1.Cutover
		finalID     string
		finalStored *switchyardv1.Cutover
	)
	known := map[string]bool{}
	for i, d := range sc.pl.preKills {
		sc.eventsFrom = sc.eventsFrom[:0]
		for _, s := range sc.sidecars {
			sc.eventsFrom = append(sc.eventsFrom, len(s.rec.history()))
		}
		sc.createAndKill(d, known)
		what := fmt.Sprintf("preflight attempt %d (killed %s)", i+1, killMoment(d))
		if sc.id == "" {
			// Killed before the cutover was stored: after the restart,
			// there is none, and nothing moved.
			sc.landed = append(sc.landed, "(none)")
			sc.cp.start(sc.t)
			sc.waitSidecars()
			r, err := sc.api.ListCutovers(sc.ctx, &switchyardv1.ListCutoversRequest{})
			if err != nil || len(r.GetCutovers()) != len(known) {
				sc.errorf("%s: no cutover was stored before the kill, yet after the restart the control plane lists %d cutovers, %d before (%v)",
					what, len(r.GetCutovers()), len(known), err)
			}
			sc.settle(switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, what)
			continue
		}
		known[sc.id] = true
		sc.landed = append(sc.landed, stepName(sc.stored.GetStep()))
		sc.cp.start(sc.t)
		final, finalID, finalStored = sc.awaitEnd(), sc.id, sc.stored
		outcome := sc.checkOutcome(final)
		ok := sc.settle(outcome, what) && sc.progress(5, sc.homeOf(sc.sidecars[0], outcome), what)
		sc.waitSidecars()
		sc.checkRouting(final, outcome)
		// A kill that landed past preflight in a cutover without a
		// producer phase (group drain, quiesce, ...) goes on to done: the
		// sidecars have moved, and the next attempt would start from the
		// target.
		if !ok || sc.t.Failed() || sc.stored.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT ||
			outcome != switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK {
			break
		}
	}
	sc.t.Logf("%s the kills landed with the store at: %s", sc.tag(), strings.Join(sc.landed, ", "))
	if final == nil {
		sc.fatalf("no preflight attempt stored a cutover before its kill (landed: %v)", sc.landed)
	}
	// The checks that follow are about the last cutover that was stored.
	sc.id, sc.stored = finalID, finalStored
	if sc.stored.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT && !sc.t.Failed() {
		// Racing a step that waits on nothing; reported, not failed.
		sc.t.Logf("%s NOTE: no kill landed with the store holding preflight in %d attempts (landed: %s)", sc.tag(),
			len(sc.landed), strings.Join(sc.landed, ", "))
	}
	return final
}

func killMoment(d time.Duration) string {
	if d < 0 {
		return "when CreateCutover returned"
	}
	return fmt.Sprintf("%v after CreateCutover was sent", d.Round(10*time.Microsecond))
}

// createAndKill sends CreateCutover and kills the control plane d after
// (d < 0: once it answered). It sets sc.id and sc.stored to the cutover
// the store holds that is not among known, if any.
func (sc *scenario) createAndKill(d time.Duration, known map[string]bool) {
	ctx, cancel := context.WithTimeout(sc.ctx, 30*time.Second)
	defer cancel()
	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := sc.api.CreateCutover(sc.authed(ctx), sc.request())
		done <- result{resp.GetCutover().GetId(), err}
	}()
	var res result
	if d < 0 {
		res = <-done
		if res.err != nil {
			sc.fatalf("CreateCutover: %v", res.err)
		}
	} else {
		time.Sleep(d) // the kill's moment, drawn from the seed
	}
	if err := sc.cp.cur().kill(); err != nil {
		sc.fatalf("%v", err)
	}
	sc.killed = time.Now()
	if d >= 0 {
		res = <-done // answered before the kill, or cut off by it
	}
	sc.id, sc.stored = "", nil
	entries, err := os.ReadDir(filepath.Join(sc.cp.storeDir, "cutovers"))
	if err != nil && !os.IsNotExist(err) {
		sc.fatalf("read the store: %v", err)
	}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(id, ".") && !known[id] {
			sc.id = id
		}
	}
	if res.err == nil && res.id != sc.id {
		sc.fatalf("CreateCutover answered with cutover %s, but the store holds %q", res.id, sc.id)
	}
	if sc.id == "" {
		return
	}
	if sc.stored, err = sc.readStored(); err != nil {
		sc.fatalf("after the kill: %v", err)
	}
}
