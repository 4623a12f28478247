package verify

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// r builds a record; value "<nil>" is a tombstone.
func r(off int64, key, value string, headers ...string) *kgo.Record {
	rec := &kgo.Record{Offset: off, Key: []byte(key), Value: []byte(value), Timestamp: time.UnixMilli(1_700_000_000_000 + off%1000)}
	if value == "<nil>" {
		rec.Value = nil
	}
	for i := 0; i+1 < len(headers); i += 2 {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return rec
}

func sideOf(logStart int64, compacted bool, recs ...*kgo.Record) *side {
	s := newSide()
	s.logStart, s.compacted = logStart, compacted
	for _, x := range recs {
		s.add(x)
	}
	return s
}

// at returns a copy of rec at another offset (the same record, copied).
func at(rec *kgo.Record, off int64) *kgo.Record {
	c := *rec
	c.Offset = off
	return &c
}

func TestCompare(t *testing.T) {
	// Source offsets 0-2 went to target 0-2 (one transaction, marker at
	// 3); source 3 was a marker; source 4-5 went to target 4-5.
	ranges := []offsetmap.Range{{Src: 0, Tgt: 0, Len: 3}, {Src: 4, Tgt: 4, Len: 2}}
	s0, s1, s2 := r(0, "a", "1", "h", "x"), r(1, "b", "2"), r(2, "a", "3")
	s4, s5 := r(4, "c", "<nil>"), r(5, "d", "")
	faithful := []*kgo.Record{at(s0, 0), at(s1, 1), at(s2, 2), at(s4, 4), at(s5, 5)}
	source := []*kgo.Record{s0, s1, s2, s4, s5}
	with := func(i int, f func(*kgo.Record)) []*kgo.Record {
		out := append([]*kgo.Record(nil), faithful...)
		c := *out[i]
		f(&c)
		out[i] = &c
		return out
	}

	tests := []struct {
		name          string
		src, tgt      *side
		wantMatched   int64
		wantMismatch  string // substring of the first mismatch, "" for none
		wantAt        [2]int64
		wantSrcRemove Removed
		wantTgtRemove Removed
		wantLater     bool
		lost          []offsetmap.LostRange
	}{
		{name: "faithful copy", src: sideOf(0, false, source...), tgt: sideOf(0, false, faithful...), wantMatched: 5},
		{name: "value differs", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, with(1, func(x *kgo.Record) { x.Value = []byte("two") })...),
			wantMatched: 4, wantMismatch: "value differs", wantAt: [2]int64{1, 1}},
		{name: "null key vs empty key", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, with(4, func(x *kgo.Record) { x.Key = nil })...),
			wantMatched: 4, wantMismatch: "key (null on the target only) differs", wantAt: [2]int64{5, 5}},
		{name: "tombstone vs empty value", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, with(3, func(x *kgo.Record) { x.Value = []byte{} })...),
			wantMatched: 4, wantMismatch: "value (null on the source only) differs", wantAt: [2]int64{4, 4}},
		{name: "header order and timestamp", src: sideOf(0, false, r(0, "a", "1", "h", "x", "i", "y")),
			tgt:          sideOf(0, false, at(r(1, "a", "1", "i", "y", "h", "x"), 0)),
			wantMismatch: "headers and timestamp (1700000000000 vs 1700000000001) differ", wantAt: [2]int64{0, 0}},
		{name: "extra record on the target outside the map", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, append(append(append([]*kgo.Record(nil), faithful[:3]...), r(3, "z", "intruder")), faithful[3:]...)...),
			wantMatched: 5, wantMismatch: "not a copy of any source record", wantAt: [2]int64{-1, 3}},
		{name: "source record the map has as absent", src: sideOf(0, false, s0, s1, s2, r(3, "q", "skipped"), s4, s5),
			tgt: sideOf(0, false, faithful...), wantMatched: 5, wantMismatch: "did not copy", wantAt: [2]int64{3, -1}},
		{name: "lost offset: neither side holds it", src: sideOf(0, false, source...), lost: []offsetmap.LostRange{{From: 3, To: 4}},
			tgt: sideOf(0, false, faithful...), wantMatched: 5},
		{name: "source record the map has as lost", src: sideOf(0, false, s0, s1, s2, r(3, "q", "deleted?"), s4, s5),
			lost: []offsetmap.LostRange{{From: 3, To: 4}}, tgt: sideOf(0, false, faithful...),
			wantMatched: 5, wantMismatch: "recorded as deleted on the source", wantAt: [2]int64{3, -1}},
		{name: "records swapped on the target", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, faithful[0], at(s2, 1), at(s1, 2), faithful[3], faithful[4]),
			wantMatched: 3, wantMismatch: "key, value and timestamp", wantAt: [2]int64{1, 1}},
		{name: "record missing on the target, not compacted", src: sideOf(0, false, source...),
			tgt:         sideOf(0, false, faithful[0], faithful[2], faithful[3], faithful[4]),
			wantMatched: 4, wantMismatch: "which the target does not hold", wantAt: [2]int64{1, 1}},
		{name: "record missing on the source, not compacted", src: sideOf(0, false, s1, s2, s4, s5),
			tgt: sideOf(0, false, faithful...), wantMatched: 4, wantMismatch: "not a compacted topic", wantAt: [2]int64{0, 0}},
		{name: "source retention since copy", src: sideOf(2, false, s2, s4, s5),
			tgt: sideOf(0, false, faithful...), wantMatched: 3, wantSrcRemove: Removed{Retention: 2}},
		{name: "source compacted since copy: key a superseded at 2", src: sideOf(0, true, s1, s2, s4, s5),
			tgt: sideOf(0, false, faithful...), wantMatched: 4, wantSrcRemove: Removed{Compacted: 1}},
		{name: "source compacted since copy: tombstone removed", src: sideOf(0, true, s0, s1, s2, s5),
			tgt: sideOf(0, false, faithful...), wantMatched: 4, wantSrcRemove: Removed{Compacted: 1}},
		{name: "source compacted, key not superseded in range", src: sideOf(0, true, s0, s2, s4, s5),
			tgt:         sideOf(0, false, faithful...),
			wantMatched: 4, wantMismatch: "nothing supersedes the key", wantAt: [2]int64{1, 1}, wantLater: true},
		{name: "target compacted: key a superseded at 2", src: sideOf(0, false, source...),
			tgt:         sideOf(0, true, faithful[1], faithful[2], faithful[3], faithful[4]),
			wantMatched: 4, wantTgtRemove: Removed{Compacted: 1}},
		{name: "target retention", src: sideOf(0, false, source...),
			tgt:         sideOf(4, false, faithful[3], faithful[4]),
			wantMatched: 2, wantTgtRemove: Removed{Retention: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compare(ranges, tt.lost, tt.src, tt.tgt)
			if c.matched != tt.wantMatched {
				t.Errorf("matched %d, want %d", c.matched, tt.wantMatched)
			}
			if c.sourceRemoved != tt.wantSrcRemove || c.targetRemoved != tt.wantTgtRemove {
				t.Errorf("removed: source %+v target %+v, want %+v %+v", c.sourceRemoved, c.targetRemoved, tt.wantSrcRemove, tt.wantTgtRemove)
			}
			if c.needSourceLater != tt.wantLater {
				t.Errorf("needSourceLater %v, want %v", c.needSourceLater, tt.wantLater)
			}
			switch {
			case tt.wantMismatch == "" && c.first != nil:
				t.Errorf("unexpected mismatch: %s", c.first)
			case tt.wantMismatch != "" && c.first == nil:
				t.Errorf("no mismatch, want %q", tt.wantMismatch)
			case tt.wantMismatch != "":
				if !strings.Contains(c.first.Reason, tt.wantMismatch) {
					t.Errorf("first mismatch %q, want it to contain %q", c.first, tt.wantMismatch)
				}
				if got := [2]int64{c.first.SourceOffset, c.first.TargetOffset}; got != tt.wantAt {
					t.Errorf("first mismatch at %v, want %v", got, tt.wantAt)
				}
			}
		})
	}
}

func TestCompareLaterSupersedes(t *testing.T) {
	// Key "a" at source 0 is compacted away because it was rewritten after
	// the mirrored range: reading beyond it explains the record.
	ranges := []offsetmap.Range{{Src: 0, Tgt: 0, Len: 2}}
	src := sideOf(0, true, r(1, "b", "2"))
	tgt := sideOf(0, false, r(0, "a", "1"), r(1, "b", "2"))
	if c := compare(ranges, nil, src, tgt); c.first == nil || !c.needSourceLater {
		t.Fatalf("before reading beyond: %+v, want a mismatch asking for the later keys", c)
	}
	src.later = map[fingerprint]int64{fp(appendBytes(nil, []byte("a"))): 7}
	if c := compare(ranges, nil, src, tgt); c.first != nil || c.sourceRemoved.Compacted != 1 {
		t.Fatalf("after reading beyond: %+v, want one compacted record and no mismatch", c)
	}
}

func TestDigestDistinguishesNullAndEmpty(t *testing.T) {
	cases := map[string]*kgo.Record{
		"null key":    {Value: []byte("v")},
		"empty key":   {Key: []byte{}, Value: []byte("v")},
		"tombstone":   {Key: []byte("k")},
		"empty value": {Key: []byte("k"), Value: []byte{}},
		"null header": {Key: []byte("k"), Headers: []kgo.RecordHeader{{Key: "h"}}},
		"empty hdr":   {Key: []byte("k"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{}}}},
	}
	seen := map[[32]byte]string{}
	for name, rec := range cases {
		s := newSide()
		s.add(rec)
		sum := s.sum()
		if other, ok := seen[sum]; ok {
			t.Errorf("%s and %s have the same digest", name, other)
		}
		seen[sum] = name
	}
}
