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

// checkGroup checks what the consumer group read: every record of acks
// (checked before the stop), and, unless the cutover rolled back, none
// twice — the group resumed on the target exactly after its last
// committed source offset (invariants 2 and 4), or, in a two-phase
// cutover whose group was rolled back, stayed on the source — and each
// member read each key's records in the order they were produced. A
// record read twice before the cutover was created (a rebalance as the
// members joined) is reported, not failed: the cutover is not what read
// it again. After a rollback a record read twice (a rebalance on the
// source) is only reported.
func (sc *scenario) checkGroup(outcome switchyardv1.CutoverStep, acks [][]acked) {
	all := sc.members.snapshot()
	reads := map[string][]int{}
	for i, c := range all {
		reads[c.value] = append(reads[c.value], i)
	}
	describe := func(value string) string {
		var rs []string
		for _, i := range reads[value] {
			c := all[i]
			rs = append(rs, fmt.Sprintf("#%d member %d %d@%d at %s", i, c.member, c.partition, c.offset, c.at.Format("15:04:05.000000")))
		}
		return fmt.Sprintf("%s read %d times: %v", value, len(rs), rs)
	}
	var twice, early []string
	for _, as := range acks {
		for _, a := range as {
			if idx := reads[a.value]; len(idx) > 1 {
				if idx[len(idx)-1] >= sc.readsAtCreate {
					twice = append(twice, describe(a.value))
				} else {
					early = append(early, describe(a.value))
				}
			}
		}
	}
	if len(early) > 0 {
		sc.t.Logf("%s NOTE: the consumer group read %d records more than once before the cutover was created (%d records read then), e.g. %s",
			sc.tag(), len(early), sc.readsAtCreate, strings.Join(early[:min(len(early), 3)], "; "))
	}
	if outcome == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK {
		if len(twice) > 0 {
			sc.t.Logf("%s cutover rolled back: the consumer group read %d records more than once on the source (not an invariant), e.g. %s",
				sc.tag(), len(twice), strings.Join(twice[:min(len(twice), 3)], "; "))
		}
		return
	}
	if len(twice) > 0 {
		sc.errorf("cutover %s: the consumer group read %d acknowledged records more than once (invariants 2, 4), e.g. %s",
			stepName(outcome), len(twice), strings.Join(twice[:min(len(twice), maxListed)], "; "))
	}
	// Order: per member and key, sequence numbers only grow.
	last := map[string]int{}
	var disorder []string
	for i, c := range all {
		var p, seq int
		if _, err := fmt.Sscanf(c.value, "p%d-%d", &p, &seq); err != nil {
			continue // reported with the records
		}
		k := fmt.Sprintf("%d/%s", c.member, recordKey(p, seq))
		if l, ok := last[k]; ok && seq <= l && i >= sc.readsAtCreate {
			disorder = append(disorder, fmt.Sprintf("#%d member %d read %s (%d@%d) after seq %d of its key", i, c.member, c.value, c.partition, c.offset, l))
		}
		last[k] = seq
	}
	if len(disorder) > 0 {
		sc.errorf("cutover %s: the consumer group read %d records out of order for their key (invariant 3), e.g. %s",
			stepName(outcome), len(disorder), strings.Join(disorder[:min(len(disorder), maxListed)], "; "))
	}
}

// routingViolations checks one sidecar's switches and gate changes against
// the cutover's history as the control plane stored it (invariant 5, and
// "never releases a gate on a state it cannot prove"): a gate on the
// source only after gate was stored; a switch to the target only after
// flip was stored, and covered by a gate blocking Produce (and Fetch, for
// a group's members); a gate lifted on the target only after release was
// stored; a switch back to the source, or a gate lifted on it, only after
// rolling-back was stored — and a sidecar that ends on the target never
// does either of those, one that ends on the source never lifts a gate on
// the target. A sidecar of the groups' phase (pass "group": a group
// member's in a two-phase cutover, every one in a cutover of one
// application that produces and consumes) is held to the group's steps
// instead: quiesce (group drain for a Produce gate alone: a pipeline's),
// group-flip, group-release and groups-rolling-back; a producer's (pass
// "producers") switches without blocking Fetch. home is where the sidecar
// ends.
func routingViolations(events []event, final *switchyardv1.Cutover, home, pass string) []string {
	// started is when a step was first stored (a restart may enter it
	// again: a two-phase cutover's quiesce).
	started := func(s switchyardv1.CutoverStep) (time.Time, bool) {
		for _, h := range final.GetHistory() {
			if h.GetStep() == s && h.GetStarted() != nil {
				return h.GetStarted().AsTime(), true
			}
		}
		return time.Time{}, false
	}
	var out []string
	after := func(e event, what string, steps ...switchyardv1.CutoverStep) {
		var names []string
		for _, s := range steps {
			names = append(names, stepName(s))
			if at, ok := started(s); ok && e.at.After(at) {
				return
			}
		}
		out = append(out, fmt.Sprintf("%s: %s, but the cutover's stored history has no %s started before (history: %s)", e, what,
			strings.Join(names, " or "), historyString(final)))
	}
	gateStep, flipStep, releaseStep := switchyardv1.CutoverStep_CUTOVER_STEP_GATE, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE
	rollbacks := []switchyardv1.CutoverStep{switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK}
	needFetch := len(final.GetSpec().GetGroups()) > 0
	switch pass {
	case "producers":
		needFetch = false
	case "group":
		gateStep, flipStep, releaseStep = switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
			switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE
		rollbacks = append(rollbacks, switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK)
	}
	for _, e := range events {
		if e.err != nil {
			continue // not applied
		}
		switch {
		case e.op == "switch" && e.to == "target":
			if home == "source" && pass == "group" {
				out = append(out, fmt.Sprintf("%s: switched to the target, but the group was rolled back before its flip", e))
			}
			after(e, "switched to the target", flipStep)
			if !e.before.Blocks(keyProduce) || (needFetch && !e.before.Blocks(keyFetch)) {
				out = append(out, fmt.Sprintf("%s: switched to the target without a gate blocking Produce%s", e, map[bool]string{true: " and Fetch"}[needFetch]))
			}
		case e.op == "switch" && e.to == "source":
			if home == "target" {
				out = append(out, fmt.Sprintf("%s: switched back to the source, but it ends on the target", e))
			}
			after(e, "switched back to the source", rollbacks...)
		case e.op == "gate" && pass == "group" && putsProduce(e) && !putsCommit(e) && e.active == "source":
			// A pipeline that commits outside transactions has its
			// Produce held from the group drain on.
			after(e, "gated Produce", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, gateStep)
		case e.op == "gate" && (putsProduce(e) || putsCommit(e)) && e.active == "source":
			after(e, "gated Produce or OffsetCommit", gateStep)
		case e.op == "gate" && e.active == "target" && (lifts(e, keyProduce) || lifts(e, keyFetch)):
			if home == "source" {
				out = append(out, fmt.Sprintf("%s: lifted a gate on the target, but it ends on the source", e))
			}
			after(e, "lifted a gate on the target", releaseStep)
		case e.op == "gate" && e.active == "source" && (lifts(e, keyProduce) || lifts(e, keyFetch) || lifts(e, keyOffsetCommit)):
			if home == "target" {
				out = append(out, fmt.Sprintf("%s: lifted a gate on the source, but it ends on the target", e))
			}
			after(e, "lifted a gate on the source", rollbacks...)
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
