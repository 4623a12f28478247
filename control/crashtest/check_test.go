//go:build unix

package crashtest

import (
	"context"
	"fmt"
	"strings"
	"time"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// maxListed bounds how many offending records one message lists.
const maxListed = 10

// checkRecords checks every acknowledged record: on the outcome's cluster
// (the source after a rollback, the target when done) exactly once, in
// order per key; and the other cluster consistent with it — after a
// rollback the target holds only the mirror's copy, a prefix of each
// source partition; when done each target partition continues its source
// partition (invariants 1 to 3).
func (sc *scenario) checkRecords(ctx context.Context, outcome switchyardv1.CutoverStep, acks [][]acked, tried []int) {
	src := readTopic(ctx, sc.t, sc.source, sc.topic)
	dst := readTopic(ctx, sc.t, sc.target, sc.topic)
	home, homeName, other, otherName := dst, "target", src, "source"
	if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK {
		home, homeName, other, otherName = src, "source", dst, "target"
	}
	count := map[string]int{}
	lastSeq := map[string]int{}
	var disorder, unknown []string
	for _, r := range home {
		count[r.value]++
		var p, seq int
		if _, err := fmt.Sscanf(r.value, "p%d-%d", &p, &seq); err != nil || p < 0 || p >= len(acks) {
			unknown = append(unknown, fmt.Sprintf("%q at %d/%d", r.value, r.partition, r.offset))
			continue
		}
		k := recordKey(p, seq)
		if last, ok := lastSeq[k]; ok && seq <= last {
			disorder = append(disorder, fmt.Sprintf("%s at %d/%d after seq %d", r.value, r.partition, r.offset, last))
		}
		lastSeq[k] = seq
		if len(acks[p]) > 0 && seq > acks[p][len(acks[p])-1].seq && seq != tried[p] {
			unknown = append(unknown, fmt.Sprintf("%s at %d/%d: never acknowledged, nor in flight at the stop", r.value, r.partition, r.offset))
		}
	}
	var lost, twice []string
	n := 0
	for _, as := range acks {
		for _, a := range as {
			n++
			switch c := count[a.value]; {
			case c == 0:
				lost = append(lost, a.value)
			case c > 1:
				twice = append(twice, fmt.Sprintf("%s ×%d", a.value, c))
			}
		}
	}
	report := func(what string, list []string) {
		if len(list) == 0 {
			return
		}
		shown := list[:min(len(list), maxListed)]
		sc.errorf("cutover %s: %d %s on the %s, e.g. %s", stepName(outcome), len(list), what, homeName, strings.Join(shown, ", "))
	}
	report(fmt.Sprintf("of %d acknowledged records missing (invariant 1)", n), lost)
	report("acknowledged records present more than once (invariant 2)", twice)
	report("records out of order for their key (invariant 3)", disorder)
	report("records that were never produced", unknown)

	// The other side is a prefix of the home side, partition by
	// partition: after a rollback the target holds what the mirror copied;
	// when done the target continues the source.
	short, shortName, long, longName := other, otherName, home, homeName
	for p := range int32(partitions) {
		s, l := values(short, p), values(long, p)
		if len(s) > len(l) {
			sc.errorf("cutover %s: partition %d holds %d records on the %s but only %d on the %s: the %s should be a prefix of the %s",
				stepName(outcome), p, len(s), shortName, len(l), longName, shortName, longName)
			continue
		}
		for i := range s {
			if s[i] != l[i] {
				sc.errorf("cutover %s: partition %d: record %d is %s on the %s and %s on the %s: the %s should be a prefix of the %s",
					stepName(outcome), p, i, s[i], shortName, l[i], longName, shortName, longName)
				break
			}
		}
	}
	sc.t.Logf("%s %d records on the source, %d on the target", sc.tag(), len(src), len(dst))
}

func values(rs []rec, p int32) []string {
	var out []string
	for _, r := range rs {
		if r.partition == p {
			out = append(out, r.value)
		}
	}
	return out
}

// checkGroup checks what the consumer group read: every acknowledged
// record (checked before the stop), and when the cutover is done, none
// twice — the group resumed on the target exactly after its last committed
// source offset (invariants 2 and 4). After a rollback a record read twice
// (a rebalance on the source) is only reported.
func (sc *scenario) checkGroup(outcome switchyardv1.CutoverStep, acks [][]acked) {
	reads := map[string][]string{}
	for i, c := range sc.members.snapshot() {
		reads[c.value] = append(reads[c.value], fmt.Sprintf("#%d member %d %d@%d", i, c.member, c.partition, c.offset))
	}
	var twice []string
	for _, as := range acks {
		for _, a := range as {
			if len(reads[a.value]) > 1 {
				twice = append(twice, fmt.Sprintf("%s read %d times: %v", a.value, len(reads[a.value]), reads[a.value]))
			}
		}
	}
	if len(twice) == 0 {
		return
	}
	if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		sc.errorf("cutover done: the consumer group read %d acknowledged records more than once (invariants 2, 4), e.g. %s",
			len(twice), strings.Join(twice[:min(len(twice), maxListed)], "; "))
		return
	}
	sc.t.Logf("%s cutover rolled back: the consumer group read %d records more than once on the source (not an invariant), e.g. %s",
		sc.tag(), len(twice), strings.Join(twice[:min(len(twice), 3)], "; "))
}

// routingViolations checks one sidecar's switches and gate changes against
// the cutover's history as the control plane stored it (invariant 5, and
// "never releases a gate on a state it cannot prove"): a gate on the
// source only after gate was stored; a switch to the target only after
// flip was stored, and covered by a gate blocking Produce and Fetch; a
// gate lifted on the target only after release was stored; a switch back
// to the source, or a gate lifted on it, only after rolling-back was
// stored — and a cutover that ends done never does either of those.
func routingViolations(events []event, final *switchyardv1.Cutover, outcome switchyardv1.CutoverStep) []string {
	started := func(s switchyardv1.CutoverStep) (time.Time, bool) {
		var at time.Time
		ok := false
		for _, h := range final.GetHistory() {
			if h.GetStep() == s && h.GetStarted() != nil {
				at, ok = h.GetStarted().AsTime(), true
			}
		}
		return at, ok
	}
	var out []string
	after := func(e event, s switchyardv1.CutoverStep, what string) {
		at, ok := started(s)
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: %s, but the cutover's stored history has no %s (history: %s)", e, what, stepName(s), historyString(final)))
		case !e.at.After(at):
			out = append(out, fmt.Sprintf("%s: %s, before %s was stored (%s)", e, what, stepName(s), at.Format("15:04:05.000000")))
		}
	}
	groups := len(final.GetSpec().GetGroups()) > 0
	for _, e := range events {
		if e.err != nil {
			continue // not applied
		}
		switch {
		case e.op == "switch" && e.to == "target":
			after(e, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, "switched to the target")
			if !e.before.Blocks(keyProduce) || (groups && !e.before.Blocks(keyFetch)) {
				out = append(out, fmt.Sprintf("%s: switched to the target without a gate blocking Produce and Fetch", e))
			}
		case e.op == "switch" && e.to == "source":
			if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
				out = append(out, fmt.Sprintf("%s: switched back to the source in a cutover that ended done", e))
			}
			after(e, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, "switched back to the source")
		case e.op == "gate" && putsProduce(e) && e.active == "source":
			after(e, switchyardv1.CutoverStep_CUTOVER_STEP_GATE, "gated Produce")
		case e.op == "gate" && e.active == "target" && (lifts(e, keyProduce) || lifts(e, keyFetch)):
			if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK {
				out = append(out, fmt.Sprintf("%s: lifted a gate on the target in a cutover that was rolled back", e))
			}
			after(e, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, "lifted a gate on the target")
		case e.op == "gate" && e.active == "source" && (lifts(e, keyProduce) || lifts(e, keyFetch)):
			if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
				out = append(out, fmt.Sprintf("%s: lifted a gate on the source in a cutover that ended done", e))
			}
			after(e, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, "lifted a gate on the source")
		}
	}
	return out
}

func lifts(e event, key int16) bool { return e.before.Blocks(key) && !e.after.Blocks(key) }

func eventsString(es []event) string {
	if len(es) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}
