package offsetmap

import (
	"errors"
	"fmt"
	"testing"
)

// refMap is the naive reference: every copied source offset with its
// target offset, and the three positions.
type refMap struct {
	start, next, tgtNext int64
	copied               map[int64]int64
}

func newRef() *refMap { return &refMap{copied: map[int64]int64{}} }

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
	r.start = src
}

// translate walks offset by offset; callers keep next small.
func (r *refMap) translate(src int64) (int64, error) {
	if src < r.start {
		return 0, ErrBeforeMirrored
	}
	if src > r.next {
		return 0, ErrBeyondMirrored
	}
	for s := src; s < r.next; s++ {
		if t, ok := r.copied[s]; ok {
			return t, nil
		}
	}
	return r.tgtNext, nil
}

// applyOps interprets ops, two bytes per operation, on both m and ref, and
// fails t as soon as they disagree on whether an operation is accepted.
// Offsets stay small: each operation moves them by less than 16.
func applyOps(t testing.TB, m *Map, ref *refMap, ops []byte) {
	t.Helper()
	for i := 0; i+1 < len(ops); i += 2 {
		kind, arg := ops[i]%4, ops[i+1]
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
			ok = ref.record(src, tgt)
		case 2: // Advance, sometimes backwards
			n := ref.next + int64(arg%5)
			if arg&0x80 != 0 {
				n -= 1
			}
			err = m.Advance(n)
			ok = ref.advance(n)
		case 3: // TrimBefore
			s := ref.start + int64(arg%16)
			m.TrimBefore(s)
			ref.trim(s)
			ok = true
		}
		if ok != (err == nil) {
			t.Fatalf("op %d (kind %d arg %#x): map error %v, reference accepted %v", i/2, kind, arg, err, ok)
		}
		if err != nil && !errors.Is(err, ErrNotIncreasing) && !errors.Is(err, ErrInvalidOffset) {
			t.Fatalf("op %d: unexpected error %v", i/2, err)
		}
	}
}

// checkAgainst compares every position in and around the map's range with
// the reference, and checks the map's own invariants.
func checkAgainst(t testing.TB, m *Map, ref *refMap) {
	t.Helper()
	if m.Start() != ref.start || m.Next() != ref.next || m.TargetNext() != ref.tgtNext {
		t.Fatalf("positions start/next/targetNext = %d/%d/%d, reference %d/%d/%d",
			m.Start(), m.Next(), m.TargetNext(), ref.start, ref.next, ref.tgtNext)
	}
	// One backward pass gives the reference answer for every position.
	want := ref.tgtNext
	for s := ref.next + 2; s >= ref.start-2; s-- {
		got, err := m.Translate(s)
		switch {
		case s > ref.next:
			if !errors.Is(err, ErrBeyondMirrored) {
				t.Fatalf("Translate(%d) = %d, %v; want ErrBeyondMirrored", s, got, err)
			}
			continue
		case s < ref.start:
			if !errors.Is(err, ErrBeforeMirrored) {
				t.Fatalf("Translate(%d) = %d, %v; want ErrBeforeMirrored", s, got, err)
			}
			continue
		}
		if tgt, ok := ref.copied[s]; ok {
			want = tgt
		}
		if err != nil || got != want {
			t.Fatalf("Translate(%d) = %d, %v; want %d", s, got, err, want)
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
}

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
}

// checkInvariants checks what every map must satisfy: ranges non-empty,
// sorted, maximal, inside [Start, Next) and below TargetNext.
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
	return nil
}
