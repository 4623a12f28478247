package compat_test

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/internal/clientbed"
)

// stored is a record as a cluster holds it.
type stored struct {
	Partition int32
	Offset    int64
	Value     string
	// Writer is the producer id and epoch of the record's batch, to tell
	// apart, when a record is stored twice, a resend by the same producer
	// from a write by a new one.
	Writer string
}

// checkInput is everything one run produced: the clients' reports and what
// the clusters hold afterwards.
type checkInput struct {
	Reports []clientbed.LiveReport
	// Source and Target hold every record of the topic, by partition and
	// offset.
	Source, Target []stored
	// Committed and End are the group's committed offsets and the topic's
	// end offsets on the target after the clients stopped.
	Committed, End map[int32]int64
	// TargetLog, for transactional runs, is the target's log read
	// read_uncommitted: the records of transactions aborted there too.
	TargetLog []stored
}

// runResult is what one run proved; the counts are the numbers
// docs/COMPATIBILITY.md reports.
type runResult struct {
	Client  string `json:"client"`
	Library string `json:"library"`
	Backend string `json:"backend"`
	Seed    uint64 `json:"seed"`
	Run     int    `json:"run"`
	// FlipDelayMS is how long after warm-up the cutover was started.
	FlipDelayMS int64  `json:"flip_delay_ms"`
	GateMode    string `json:"gate_mode"`
	ColdStart   bool   `json:"cold_start,omitempty"`
	// Transactional: the producers were transactional (COMPAT_TRANSACTIONAL);
	// Acked then counts the records of committed transactions.
	Transactional bool `json:"transactional,omitempty"`
	// Settings names what the run changed from the library's defaults.
	Settings string `json:"settings,omitempty"`

	Sent  int `json:"sent"`
	Acked int `json:"acked"`
	// AckedAfterFlip counts the records acknowledged after the cutover ended.
	AckedAfterFlip int `json:"acked_after_flip"`
	OnTarget       int `json:"on_target"`
	// Lost: acknowledged, not on the target.
	Lost int `json:"lost"`
	// Duplicated: records the target holds more than once (extra copies).
	Duplicated int `json:"duplicated"`
	// Unacked: on the target, never acknowledged (a delivery error or a
	// record without a report).
	Unacked int `json:"unacked"`
	// Misplaced: acknowledged at a partition/offset that holds another
	// record on both clusters.
	Misplaced int `json:"misplaced"`
	// OrderViolations: a producer's records out of sequence in a partition.
	OrderViolations int `json:"order_violations"`
	// Malformed: an ack reported twice, or a record on the target that no
	// instance wrote.
	Malformed int `json:"malformed"`
	// Unreported: records handed to the producer with neither an ack nor a
	// delivery error.
	Unreported int `json:"unreported"`

	// Notices counts errors a library surfaces by design once per group
	// member at a cutover and recovers from by itself (see notices); they
	// are reported, not failed.
	Notices       int `json:"notices"`
	ProduceErrors int `json:"produce_errors"`
	ConsumeErrors int `json:"consume_errors"`
	ClientErrors  int `json:"client_errors"`
	FatalErrors   int `json:"fatal_errors"`

	Consumed int `json:"consumed"`
	// ConsumerDuplicates counts extra deliveries of a record to the group.
	ConsumerDuplicates int `json:"consumer_duplicates"`
	// ConsumerMissed counts acknowledged records never delivered.
	ConsumerMissed int `json:"consumer_missed"`
	// PositionErrors counts partitions whose committed offset on the target
	// is not its end offset once everything was consumed, and group
	// offsets the cutover synced inexactly.
	PositionErrors int `json:"position_errors"`
	// Aborted counts the records of the transactions the application
	// aborted (transactional producers). AbortedVisible counts those a
	// read_committed read of either cluster returned, AbortedDelivered
	// the deliveries of one to the group.
	Aborted          int `json:"aborted,omitempty"`
	AbortedVisible   int `json:"aborted_visible,omitempty"`
	AbortedDelivered int `json:"aborted_delivered,omitempty"`
	// AbortedOnTarget counts the aborted records the target's log holds
	// (read_uncommitted): transactions aborted on the target, after the
	// flip (the mirror copies committed records only). Not a failure: it
	// shows the invisibility check had records to hide there.
	AbortedOnTarget int `json:"aborted_on_target,omitempty"`

	// Stalled is true when an instance had fewer than 100 acks within 90s
	// after the cutover ended.
	Stalled bool `json:"stalled"`
	// SyncedPartitions counts the group partitions the cutover synced.
	SyncedPartitions int `json:"synced_partitions"`
	// Settled is true when the group had consumed every acknowledged record
	// and committed the end of every partition before the clients stopped.
	Settled       bool  `json:"settled"`
	BlockWindowMS int64 `json:"block_window_ms"`
	// ReleaseMS is the cutover's release step: consumers' Fetch stays
	// refused from the flip until their groups rejoined on the target.
	ReleaseMS int64  `json:"release_ms"`
	Cutover   string `json:"cutover"`
	ElapsedMS int64  `json:"elapsed_ms"`

	// Completed is false when the run stopped before its checks (see the
	// test log).
	Completed bool `json:"completed"`
	// Problems lists examples of each failed check, for the test log.
	Problems []string `json:"problems,omitempty"`
}

// failed reports whether any invariant was broken.
func (r *runResult) failed() bool {
	return r.Stalled || r.Lost+r.Duplicated+r.Misplaced+r.OrderViolations+r.Malformed+r.Unreported+r.ProduceErrors+r.ConsumeErrors+
		r.ClientErrors+r.FatalErrors+r.ConsumerDuplicates+r.ConsumerMissed+r.PositionErrors+r.AbortedVisible+r.AbortedDelivered > 0
}

// notices are errors a library hands the application by design when its
// group membership ends, and recovers from by itself: each is allowed once
// per instance (group member) and run; a second one is an error.
var notices = []struct {
	client clientbed.Client
	side   string
	match  string
	why    string
}{
	{clientbed.FranzGo, clientbed.SideConsume, "unable to join group session: UNKNOWN_MEMBER_ID",
		"franz-go injects ErrGroupSession into PollFetches whenever a heartbeat fails with anything but " +
			"REBALANCE_IN_PROGRESS (consumer_group.go manageFailWait); the sidecar's UNKNOWN_MEMBER_ID for a member " +
			"of the source's group is what makes it drop the positions it reached on the source. It rejoins by itself."},
	{clientbed.FranzGo, clientbed.SideConsume, "unable to join group session: REBALANCE_IN_PROGRESS",
		"the same notice when the member's first request on the target is a JoinGroup (a rebalance was under way at " +
			"the flip): the sidecar answers a JoinGroup carrying the source's member id REBALANCE_IN_PROGRESS once, which " +
			"franz-go takes as a failed session (partitions and positions dropped), then UNKNOWN_MEMBER_ID, and it joins afresh."},
}

// notice returns why e is a known notice of client c, or "".
func notice(c clientbed.Client, e clientbed.LiveError) string {
	for _, n := range notices {
		if n.client == c && n.side == e.Side && !e.Fatal && strings.Contains(e.Msg, n.match) {
			return n.why
		}
	}
	return ""
}

// maxExamples bounds the examples kept per kind of problem.
const maxExamples = 5

type problems struct {
	n   map[string]int
	out []string
}

func (p *problems) add(kind, format string, args ...any) {
	if p.n == nil {
		p.n = map[string]int{}
	}
	p.n[kind]++
	if p.n[kind] <= maxExamples {
		p.out = append(p.out, kind+": "+fmt.Sprintf(format, args...))
	}
}

// parseValue splits "<prefix>-<seq>".
func parseValue(v string) (prefix string, seq int, ok bool) {
	i := strings.LastIndexByte(v, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.Atoi(v[i+1:])
	return v[:i], seq, err == nil
}

// check holds one run to the invariants: every acknowledged record on the
// target exactly once, in each producer's order per partition, at the
// position its ack named (on the source before the flip, on the target
// after); no error surfaced; the group delivered every acknowledged record
// exactly once and committed the end of every partition; no record of an
// aborted transaction on either cluster (read_committed) or delivered to
// the group.
func check(in checkInput, r *runResult) {
	var p problems
	acked := map[string]bool{}
	aborted := map[string]bool{}
	for _, rep := range in.Reports {
		r.Sent += rep.Sent
		r.Acked += len(rep.Acks)
		r.Aborted += len(rep.Aborted)
		withSeq := map[int]bool{}
		noticed := false
		for _, e := range rep.Errors {
			if !noticed && notice(rep.Client, e) != "" {
				noticed = true
				r.Notices++
				continue
			}
			switch e.Side {
			case clientbed.SideProduce:
				r.ProduceErrors++
				if e.Seq >= 0 {
					withSeq[e.Seq] = true
				}
			case clientbed.SideConsume:
				r.ConsumeErrors++
			default:
				r.ClientErrors++
			}
			if e.Fatal {
				r.FatalErrors++
			}
			p.add("error surfaced", "%s %s: %v", rep.Client, rep.Spec.Prefix, e)
		}
		for _, a := range rep.Acks {
			v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)
			if acked[v] {
				r.Malformed++
				p.add("acknowledged twice", "%s", v)
			}
			acked[v] = true
			delete(withSeq, a.Seq)
		}
		for _, a := range rep.Aborted {
			v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)
			if acked[v] || aborted[v] {
				r.Malformed++
				p.add("acknowledged and aborted, or aborted twice", "%s", v)
			}
			aborted[v] = true
			delete(withSeq, a.Seq)
		}
		if n := rep.Sent - len(rep.Acks) - len(rep.Aborted) - len(withSeq); n > 0 {
			r.Unreported += n
			p.add("no delivery report", "%s %s: %d of %d records sent", rep.Client, rep.Spec.Prefix, n, rep.Sent)
		}
	}

	at := func(recs []stored) map[int32]map[int64]string {
		m := map[int32]map[int64]string{}
		for _, s := range recs {
			if m[s.Partition] == nil {
				m[s.Partition] = map[int64]string{}
			}
			m[s.Partition][s.Offset] = s.Value
		}
		return m
	}
	srcAt, dstAt := at(in.Source), at(in.Target)

	// The target: each record once, each producer's records in order.
	r.OnTarget = len(in.Target)
	count := map[string]int{}
	target := append([]stored(nil), in.Target...)
	sort.Slice(target, func(i, j int) bool {
		a, b := target[i], target[j]
		return a.Partition < b.Partition || (a.Partition == b.Partition && a.Offset < b.Offset)
	})
	last := map[string]int{} // partition/prefix → last seq
	first, onSource := map[string]stored{}, map[string]stored{}
	for _, o := range in.Source {
		onSource[o.Value] = o
	}
	for _, s := range target {
		count[s.Value]++
		if count[s.Value] == 1 {
			first[s.Value] = s
		}
		if count[s.Value] == 2 {
			f, src := first[s.Value], "not on the source"
			if o, ok := onSource[s.Value]; ok {
				src = fmt.Sprintf("on the source at %d/%d by producer %s", o.Partition, o.Offset, o.Writer)
			}
			p.add("duplicated on the target", "%s (at %d/%d by producer %s, again at %d/%d by producer %s; %s)",
				s.Value, f.Partition, f.Offset, f.Writer, s.Partition, s.Offset, s.Writer, src)
		}
		if count[s.Value] > 1 {
			r.Duplicated++
		}
		if !acked[s.Value] && count[s.Value] == 1 {
			r.Unacked++
		}
		prefix, seq, ok := parseValue(s.Value)
		if !ok {
			r.Malformed++
			p.add("foreign record on the target", "%q at %d/%d", s.Value, s.Partition, s.Offset)
			continue
		}
		k := fmt.Sprintf("%d/%s", s.Partition, prefix)
		if prev, ok := last[k]; ok && seq <= prev {
			r.OrderViolations++
			p.add("order", "partition %d: %s at offset %d after %s-%d", s.Partition, s.Value, s.Offset, prefix, prev)
		}
		last[k] = seq
	}
	for _, rep := range in.Reports {
		for _, a := range rep.Acks {
			v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)
			if count[v] == 0 {
				r.Lost++
				p.add("lost", "%s (acknowledged at %d/%d)", v, a.Partition, a.Offset)
			}
			if srcAt[a.Partition][a.Offset] != v && dstAt[a.Partition][a.Offset] != v {
				r.Misplaced++
				p.add("not where acknowledged", "%s acknowledged at %d/%d: source has %q, target %q", v, a.Partition, a.Offset,
					srcAt[a.Partition][a.Offset], dstAt[a.Partition][a.Offset])
			}
		}
	}

	// Aborted transactions stay invisible: on both clusters read
	// read_committed, and to the group, which reads read_committed.
	for _, side := range []struct {
		name string
		recs []stored
	}{{"source", in.Source}, {"target", in.Target}} {
		for _, s := range side.recs {
			if aborted[s.Value] {
				r.AbortedVisible++
				p.add("aborted record visible", "%s on the %s at %d/%d (read_committed)", s.Value, side.name, s.Partition, s.Offset)
			}
		}
	}

	for _, s := range in.TargetLog {
		if aborted[s.Value] {
			r.AbortedOnTarget++
		}
	}

	// The consumers.
	delivered := map[string]int{}
	for _, rep := range in.Reports {
		r.Consumed += len(rep.Records)
		for _, rec := range rep.Records {
			delivered[rec.Value]++
			if delivered[rec.Value] == 2 {
				p.add("delivered twice", "%s (to %s, at %d/%d)", rec.Value, rep.Spec.Prefix, rec.Partition, rec.Offset)
			}
			if delivered[rec.Value] > 1 {
				r.ConsumerDuplicates++
			}
			if aborted[rec.Value] {
				r.AbortedDelivered++
				p.add("aborted record delivered", "%s (to %s, at %d/%d)", rec.Value, rep.Spec.Prefix, rec.Partition, rec.Offset)
			}
		}
	}
	for v := range acked {
		if delivered[v] == 0 {
			r.ConsumerMissed++
			p.add("never delivered", "%s", v)
		}
	}
	for part, end := range in.End {
		c, ok := in.Committed[part]
		if !ok && end == 0 {
			continue // nothing to consume there
		}
		if !ok || c != end {
			r.PositionErrors++
			p.add("position", "partition %d: committed %v (present %v), end %d", part, c, ok, end)
		}
	}
	r.Problems = append(r.Problems, p.out...)
}
