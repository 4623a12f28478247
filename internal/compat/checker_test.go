package compat_test

import (
	"testing"

	"github.com/switchyard/switchyard/internal/clientbed"
)

// TestCheck holds the checker itself to account: a clean run passes, and
// each broken invariant is counted under its own name.
func TestCheck(t *testing.T) {
	// clean: instance i0 produced seq 0-2; 0 and 1 before the flip (source
	// offsets 0, 1), 2 after (target offset 2); the group read all three.
	clean := func() checkInput {
		return checkInput{
			Reports: []clientbed.LiveReport{{
				Client: clientbed.Java, Spec: clientbed.LiveSpec{Prefix: "i0"}, Sent: 3,
				Acks:    []clientbed.Ack{{Seq: 0, Partition: 0, Offset: 0}, {Seq: 1, Partition: 0, Offset: 1}, {Seq: 2, Partition: 0, Offset: 2}},
				Records: []clientbed.LiveRecord{{Value: "i0-0"}, {Value: "i0-1"}, {Value: "i0-2"}},
			}},
			Source:    []stored{{0, 0, "i0-0", ""}, {0, 1, "i0-1", ""}},
			Target:    []stored{{0, 0, "i0-0", ""}, {0, 1, "i0-1", ""}, {0, 2, "i0-2", ""}},
			Committed: map[int32]int64{0: 3},
			End:       map[int32]int64{0: 3, 1: 0},
		}
	}
	franzNotice := clientbed.LiveError{Side: clientbed.SideConsume, Seq: -1,
		Msg: "fetch /0: unable to join group session: UNKNOWN_MEMBER_ID: The coordinator is not aware of this member."}
	for _, tc := range []struct {
		name   string
		mutate func(*checkInput)
		want   func(r *runResult) int
	}{
		{"clean", func(*checkInput) {}, func(r *runResult) int { return 0 }},
		{"lost", func(in *checkInput) { in.Target = in.Target[:2] }, func(r *runResult) int { return r.Lost }},
		{"duplicated", func(in *checkInput) { in.Target = append(in.Target, stored{0, 3, "i0-2", ""}) },
			func(r *runResult) int { return r.Duplicated }},
		{"order", func(in *checkInput) {
			in.Target = []stored{{0, 0, "i0-0", ""}, {0, 1, "i0-2", ""}, {0, 2, "i0-1", ""}}
		}, func(r *runResult) int { return r.OrderViolations }},
		{"misplaced", func(in *checkInput) { in.Reports[0].Acks[2].Offset = 7 }, func(r *runResult) int { return r.Misplaced }},
		{"acknowledged twice", func(in *checkInput) {
			in.Reports[0].Acks = append(in.Reports[0].Acks, in.Reports[0].Acks[2])
			in.Reports[0].Sent = 4
			in.Reports[0].Errors = nil
		}, func(r *runResult) int { return r.Malformed }},
		{"unreported", func(in *checkInput) { in.Reports[0].Sent = 4 }, func(r *runResult) int { return r.Unreported }},
		{"delivery error", func(in *checkInput) {
			in.Reports[0].Errors = []clientbed.LiveError{{Side: clientbed.SideProduce, Seq: 3, Msg: "NOT_ENOUGH_REPLICAS"}}
		}, func(r *runResult) int { return r.ProduceErrors }},
		{"consumer duplicate", func(in *checkInput) {
			in.Reports[0].Records = append(in.Reports[0].Records, clientbed.LiveRecord{Value: "i0-1"})
		}, func(r *runResult) int { return r.ConsumerDuplicates }},
		{"consumer missed", func(in *checkInput) { in.Reports[0].Records = in.Reports[0].Records[1:] },
			func(r *runResult) int { return r.ConsumerMissed }},
		{"position", func(in *checkInput) { in.Committed[0] = 2 }, func(r *runResult) int { return r.PositionErrors }},
		{"notice of another client", func(in *checkInput) {
			in.Reports[0].Errors = []clientbed.LiveError{franzNotice}
		}, func(r *runResult) int { return r.ConsumeErrors }},
		{"a second notice", func(in *checkInput) {
			in.Reports[0].Client = clientbed.FranzGo
			in.Reports[0].Errors = []clientbed.LiveError{franzNotice, franzNotice}
		}, func(r *runResult) int { return r.ConsumeErrors }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := clean()
			tc.mutate(&in)
			var r runResult
			check(in, &r)
			if tc.name == "clean" {
				if r.failed() || len(r.Problems) > 0 {
					t.Fatalf("clean run failed: %+v", r)
				}
				return
			}
			if got := tc.want(&r); got != 1 || !r.failed() {
				t.Errorf("counted %d, failed %v, want 1 and failed: %+v", got, r.failed(), r)
			}
		})
	}

	// A transactional run: seq 3 was written at 0/3 of the target in a
	// transaction the application aborted; read_committed hides it.
	txn := func() checkInput {
		in := clean()
		in.Reports[0].Sent = 4
		in.Reports[0].Aborted = []clientbed.Ack{{Seq: 3, Partition: 0, Offset: 3}}
		in.Committed[0], in.End[0] = 5, 5 // the record and the abort marker
		in.TargetLog = append(append([]stored(nil), in.Target...), stored{0, 3, "i0-3", ""})
		return in
	}
	for _, tc := range []struct {
		name   string
		mutate func(*checkInput)
		want   func(r *runResult) int
	}{
		{"aborted record on the target", func(in *checkInput) { in.Target = append(in.Target, stored{0, 3, "i0-3", ""}) },
			func(r *runResult) int { return r.AbortedVisible }},
		{"aborted record on the source", func(in *checkInput) { in.Source = append(in.Source, stored{0, 2, "i0-3", ""}) },
			func(r *runResult) int { return r.AbortedVisible }},
		{"aborted record delivered", func(in *checkInput) {
			in.Reports[0].Records = append(in.Reports[0].Records, clientbed.LiveRecord{Partition: 0, Offset: 3, Value: "i0-3"})
		}, func(r *runResult) int { return r.AbortedDelivered }},
		{"acknowledged and aborted", func(in *checkInput) {
			in.Reports[0].Aborted = append(in.Reports[0].Aborted, clientbed.Ack{Seq: 2, Partition: 0, Offset: 2})
			in.Reports[0].Sent = 4
		}, func(r *runResult) int { return r.Malformed }},
		{"unreported beside an abort", func(in *checkInput) { in.Reports[0].Sent = 5 }, func(r *runResult) int { return r.Unreported }},
	} {
		t.Run("transactional/"+tc.name, func(t *testing.T) {
			in := txn()
			var r runResult
			check(in, &r)
			if r.failed() || len(r.Problems) > 0 || r.Aborted != 1 || r.AbortedOnTarget != 1 {
				t.Fatalf("clean transactional run failed (or its abort was not counted): %+v", r)
			}
			in = txn()
			tc.mutate(&in)
			r = runResult{}
			check(in, &r)
			if got := tc.want(&r); got != 1 || !r.failed() {
				t.Errorf("counted %d, failed %v, want 1 and failed: %+v", got, r.failed(), r)
			}
		})
	}

	// A member whose first request on the target is a JoinGroup is told
	// REBALANCE_IN_PROGRESS (proxy/members.go): the same notice, once.
	joinNotice := clientbed.LiveError{Side: clientbed.SideConsume, Seq: -1,
		Msg: "fetch /0: unable to join group session: REBALANCE_IN_PROGRESS: The group is rebalancing, so a rejoin is needed."}
	for _, notices := range [][]clientbed.LiveError{{franzNotice}, {joinNotice}} {
		t.Run("one notice per member: "+notices[0].Msg, func(t *testing.T) {
			in := clean()
			in.Reports[0].Client = clientbed.FranzGo
			in.Reports[0].Errors = notices
			var r runResult
			check(in, &r)
			if r.failed() || r.Notices != 1 {
				t.Errorf("notices %d, failed %v: %+v", r.Notices, r.failed(), r)
			}
		})
	}
	t.Run("two kinds of notice", func(t *testing.T) {
		in := clean()
		in.Reports[0].Client = clientbed.FranzGo
		in.Reports[0].Errors = []clientbed.LiveError{joinNotice, franzNotice}
		var r runResult
		check(in, &r)
		if !r.failed() || r.ConsumeErrors != 1 {
			t.Errorf("a second notice of another kind: consume errors %d, failed %v: %+v", r.ConsumeErrors, r.failed(), r)
		}
	})
}
