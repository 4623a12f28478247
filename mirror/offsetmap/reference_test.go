package offsetmap

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// refMap is the naive reference: every copied source offset with its
// target offset, every lost source offset, and the three positions.
type refMap struct {
	start, next, tgtNext int64
	copied               map[int64]int64
	lost                 map[int64]bool
}

func newRef() *refMap { return &refMap{copied: map[int64]int64{}, lost: map[int64]bool{}} }

func (r *refMap) record(src, tgt int64) bool {
	if src < r.next || tgt < r.tgtNext {
		return false
	}
	r.copied[src] = tgt
	r.next, r.tgtNext = src+1, tgt+1
	return true
}

func (r *refMap) advance(n int64) bool {
	if n < r.next {
		return false
	}
	r.next = n
	return true
}

func (r *refMap) skipLost(to int64) bool {
	if to <= r.next {
		return false
	}
	for s := r.next; s < to; s++ {
		r.lost[s] = true
	}
	r.next = to
	return true
}

func (r *refMap) trim(src int64) {
	if src <= r.start {
		return
	}
	src = min(src, r.next)
	for s := range r.copied {
		if s < src {
			delete(r.copied, s)
		}
	}
	for s := range r.lost {
		if s < src {
			delete(r.lost, s)
		}
	}
	r.start = src
}

// translate walks offset by offset; callers keep next small.
func (r *refMap) translate(src int64) (int64, error) {
	if src < r.start {
		return 0, ErrBeforeMirrored
	}
	tgt, from, err := r.resume(src)
	if err == nil && from != src {
		return 0, ErrLost
	}
	return tgt, err
}

// resume: the first copied record at or after max(src, start), and the
// position after the last lost offset on the way there.
func (r *refMap) resume(src int64) (tgt, from int64, err error) {
	src = max(src, r.start)
	if src > r.next {
		return 0, 0, ErrBeyondMirrored
	}
	from = src
	for s := src; s < r.next; s++ {
		if t, ok := r.copied[s]; ok {
			return t, from, nil
		}
		if r.lost[s] {
			from = s + 1
		}
	}
	return r.tgtNext, from, nil
}

// applyOps interprets ops, two bytes per operation, on both m and ref, and
// fails t as soon as they disagree on whether an operation is accepted.
// Offsets stay small: each operation moves them by less than 16.
//
// It also builds the map a third way, as the mirror does: the accepted
// operations go into deltas (one per few operations, starting at the
// merged map's Next), each encoded, decoded and merged; trims apply to the
// merged map between deltas. It returns that map, which must equal m.
func applyOps(t testing.TB, m *Map, ref *refMap, ops []byte) *Map {
	t.Helper()
	merged := New()
	var delta *Map
	flush := func() {
		t.Helper()
		if delta == nil {
			return
		}
		d, err := DecodeValue(EncodeValue(delta))
		if err != nil {
			t.Fatalf("decode delta: %v", err)
		}
		if err := merged.Merge(d); err != nil {
			t.Fatalf("merge delta %v lost %v next %d into next %d: %v", d.Ranges(), d.Lost(), d.Next(), merged.Next(), err)
		}
		delta = nil
	}
	for i := 0; i+1 < len(ops); i += 2 {
		kind, arg := ops[i]%5, ops[i+1]
		if kind != 3 && delta == nil {
			var err error
			if delta, err = NewAt(merged.Next(), 0); err != nil {
				t.Fatal(err)
			}
		}
		var ok bool
		var err error
		switch kind {
		case 0, 1: // Record, sometimes out of order
			src := ref.next + int64(arg&0x7)
			tgt := ref.tgtNext + int64(arg>>3&0x3)
			if arg&0x80 != 0 {
				src -= 2
			}
			if arg&0x40 != 0 && kind == 1 {
				tgt -= 1
			}
			err = m.Record(src, tgt)
			if ok = ref.record(src, tgt); ok {
				if derr := delta.Record(src, tgt); derr != nil {
					t.Fatalf("op %d: delta refused record %d→%d: %v", i/2, src, tgt, derr)
				}
			}
		case 2: // Advance, sometimes backwards
			n := ref.next + int64(arg%5)
			if arg&0x80 != 0 {
				n -= 1
			}
			err = m.Advance(n)
			if ok = ref.advance(n); ok {
				if derr := delta.Advance(n); derr != nil {
					t.Fatalf("op %d: delta refused advance to %d: %v", i/2, n, derr)
				}
			}
		case 3: // TrimBefore
			flush()
			s := ref.start + int64(arg%16)
			m.TrimBefore(s)
			merged.TrimBefore(s)
			ref.trim(s)
			ok = true
		case 4: // SkipLost, sometimes not forward
			to := ref.next + 1 + int64(arg%6)
			if arg&0x80 != 0 {
				to = ref.next - int64(arg&1)
			}
			var r LostRange
			r, err = m.SkipLost(to)
			if ok = ref.skipLost(to); ok {
				if r.To != to || r.Len() < 1 {
					t.Fatalf("op %d: SkipLost(%d) returned %v", i/2, to, r)
				}
				if _, derr := delta.SkipLost(to); derr != nil {
					t.Fatalf("op %d: delta refused to skip to %d: %v", i/2, to, derr)
				}
			}
		}
		if ok != (err == nil) {
			t.Fatalf("op %d (kind %d arg %#x): map error %v, reference accepted %v", i/2, kind, arg, err, ok)
		}
		if err != nil && !errors.Is(err, ErrNotIncreasing) && !errors.Is(err, ErrInvalidOffset) {
			t.Fatalf("op %d: unexpected error %v", i/2, err)
		}
		if arg%3 == 0 {
			flush()
		}
	}
	flush()
	if merged.Start() != m.Start() || merged.Next() != m.Next() || merged.TargetNext() != m.TargetNext() ||
		!slices.Equal(merged.Ranges(), m.Ranges()) || !slices.Equal(merged.Lost(), m.Lost()) {
		t.Fatalf("merged deltas: %v lost %v %d/%d/%d; built directly: %v lost %v %d/%d/%d",
			merged.Ranges(), merged.Lost(), merged.Start(), merged.Next(), merged.TargetNext(),
			m.Ranges(), m.Lost(), m.Start(), m.Next(), m.TargetNext())
	}
	return merged
}

// checkAgainst compares every position in and around the map's range with
// the reference, and checks the map's own invariants.
func checkAgainst(t testing.TB, m *Map, ref *refMap) {
	t.Helper()
	if m.Start() != ref.start || m.Next() != ref.next || m.TargetNext() != ref.tgtNext {
		t.Fatalf("positions start/next/targetNext = %d/%d/%d, reference %d/%d/%d",
			m.Start(), m.Next(), m.TargetNext(), ref.start, ref.next, ref.tgtNext)
	}
	for _, s := range []int64{ref.start - 2, ref.start - 1, ref.next + 1, ref.next + 2} {
		compareTranslate(t, m, ref, s)
	}
	// One backward pass gives the reference answers for every position
	// in [start, next]: the first copied record at or after it, and the
	// position after the last lost offset before that record.
	tgt, lostEnd := ref.tgtNext, int64(-1)
	for s := ref.next; s >= ref.start; s-- {
		if c, ok := ref.copied[s]; ok {
			tgt, lostEnd = c, -1
		} else if ref.lost[s] && lostEnd < 0 {
			lostEnd = s + 1
		}
		from := s
		if lostEnd >= 0 {
			from = lostEnd
		}
		got, gotFrom, err := m.Resume(s)
		if err != nil || got != tgt || gotFrom != from {
			t.Fatalf("Resume(%d) = %d, %d, %v; want %d, %d", s, got, gotFrom, err, tgt, from)
		}
		got, err = m.Translate(s)
		switch {
		case from != s && !errors.Is(err, ErrLost):
			t.Fatalf("Translate(%d) = %d, %v; want ErrLost (lost offsets up to %d)", s, got, err, from)
		case from == s && (err != nil || got != tgt):
			t.Fatalf("Translate(%d) = %d, %v; want %d", s, got, err, tgt)
		}
	}
	if err := checkInvariants(m); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range m.Ranges() {
		for k := int64(0); k < r.Len; k++ {
			if got, ok := ref.copied[r.Src+k]; !ok || got != r.Tgt+k {
				t.Fatalf("range %+v: source %d→%d, reference has %d (copied %v)", r, r.Src+k, r.Tgt+k, got, ok)
			}
			n++
		}
	}
	if n != len(ref.copied) {
		t.Fatalf("ranges hold %d records, reference %d", n, len(ref.copied))
	}
	n = 0
	for _, r := range m.Lost() {
		for s := r.From; s < r.To; s++ {
			if !ref.lost[s] {
				t.Fatalf("lost range %v: offset %d is not lost in the reference", r, s)
			}
			n++
		}
	}
	if n != len(ref.lost) {
		t.Fatalf("lost ranges hold %d offsets, reference %d", n, len(ref.lost))
	}
}

// compareTranslate compares Translate and Resume of s with the reference.
func compareTranslate(t testing.TB, m *Map, ref *refMap, s int64) {
	t.Helper()
	got, err := m.Translate(s)
	want, werr := ref.translate(s)
	switch {
	case werr != nil && !errors.Is(err, werr):
		t.Fatalf("Translate(%d) = %d, %v; want error %v", s, got, err, werr)
	case werr == nil && (err != nil || got != want):
		t.Fatalf("Translate(%d) = %d, %v; want %d", s, got, err, want)
	}
	got, from, err := m.Resume(s)
	want, wfrom, werr := ref.resume(s)
	switch {
	case werr != nil && !errors.Is(err, werr):
		t.Fatalf("Resume(%d) = %d, %d, %v; want error %v", s, got, from, err, werr)
	case werr == nil && (err != nil || got != want || from != wfrom):
		t.Fatalf("Resume(%d) = %d, %d, %v; want %d, %d", s, got, from, err, want, wfrom)
	}
}

// checkInvariants checks what every map must satisfy: ranges non-empty,
// sorted, maximal, inside [Start, Next) and below TargetNext; lost ranges
// non-empty, sorted, merged, inside [Start, Next) and disjoint from the
// ranges.
func checkInvariants(m *Map) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.start < 0 || m.next < m.start || m.tgtNext < 0 {
		return fmt.Errorf("positions start %d next %d targetNext %d", m.start, m.next, m.tgtNext)
	}
	srcEnd, tgtEnd := m.start, int64(0)
	for i, r := range m.ranges {
		if r.Len < 1 || r.Src < srcEnd || r.Tgt < tgtEnd {
			return fmt.Errorf("range %d %+v after source %d target %d", i, r, srcEnd, tgtEnd)
		}
		if i > 0 && r.Src == srcEnd && r.Tgt == tgtEnd {
			return fmt.Errorf("range %d %+v not merged with the previous one", i, r)
		}
		srcEnd, tgtEnd = r.SrcEnd(), r.TgtEnd()
	}
	if m.next < srcEnd || m.tgtNext < tgtEnd {
		return fmt.Errorf("next %d / targetNext %d below the last range's end %d / %d", m.next, m.tgtNext, srcEnd, tgtEnd)
	}
	end := m.start
	for i, l := range m.lost {
		if l.To <= l.From || l.From < end || i > 0 && l.From == end || l.To > m.next {
			return fmt.Errorf("lost range %d %v after %d (next %d)", i, l, end, m.next)
		}
		for _, r := range m.ranges {
			if r.Src < l.To && r.SrcEnd() > l.From {
				return fmt.Errorf("lost range %v overlaps range %+v", l, r)
			}
		}
		end = l.To
	}
	return nil
}
