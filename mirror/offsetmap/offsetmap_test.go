package offsetmap

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// step builds a map in tests: one Record, Advance or TrimBefore.
type step struct {
	op       byte // 'r' record, 'a' advance, 't' trim
	src, tgt int64
}

func rec(src, tgt int64) step { return step{'r', src, tgt} }
func adv(next int64) step     { return step{op: 'a', src: next} }
func trim(src int64) step     { return step{op: 't', src: src} }

func build(t *testing.T, m *Map, steps ...step) *Map {
	t.Helper()
	for _, s := range steps {
		var err error
		switch s.op {
		case 'r':
			err = m.Record(s.src, s.tgt)
		case 'a':
			err = m.Advance(s.src)
		case 't':
			m.TrimBefore(s.src)
		}
		if err != nil {
			t.Fatalf("step %+v: %v", s, err)
		}
	}
	if err := checkInvariants(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func newAt(t *testing.T, start, tgt int64) *Map {
	t.Helper()
	m, err := NewAt(start, tgt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTranslate(t *testing.T) {
	type probe struct {
		src  int64
		want int64
		err  error
	}
	tests := []struct {
		name   string
		m      func(t *testing.T) *Map
		ranges []Range
		probes []probe
	}{
		{
			name:   "empty map",
			m:      func(t *testing.T) *Map { return New() },
			probes: []probe{{src: 0, want: 0}, {src: 1, err: ErrBeyondMirrored}, {src: -1, err: ErrBeforeMirrored}},
		},
		{
			// Two target transactions: their commit markers sit at
			// target 3 and 6.
			name:   "commit-marker gaps on the target",
			m:      func(t *testing.T) *Map { return build(t, New(), rec(0, 0), rec(1, 1), rec(2, 2), rec(3, 4), rec(4, 5)) },
			ranges: []Range{{0, 0, 3}, {3, 4, 2}},
			probes: []probe{
				{src: 0, want: 0}, {src: 2, want: 2}, {src: 3, want: 4}, {src: 4, want: 5},
				{src: 5, want: 6}, // Next → TargetNext, the second commit marker
				{src: 6, err: ErrBeyondMirrored},
			},
		},
		{
			name: "compaction gaps on the source",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(5, 1), rec(6, 2), rec(10, 3), adv(12))
			},
			ranges: []Range{{0, 0, 1}, {5, 1, 2}, {10, 3, 1}},
			probes: []probe{
				{src: 0, want: 0}, {src: 1, want: 1}, {src: 4, want: 1}, {src: 5, want: 1}, {src: 6, want: 2},
				{src: 7, want: 3}, {src: 9, want: 3}, {src: 10, want: 3},
				{src: 11, want: 4}, {src: 12, want: 4}, // trailing gap and Next → TargetNext
				{src: 13, err: ErrBeyondMirrored},
			},
		},
		{
			// Source: records 0-1, control marker 2, an aborted
			// transaction 3-5 with its marker 6, then 7-8.
			// Target: 0-1 and 3-4 around a commit marker at 2.
			name: "source control markers and an aborted transaction",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), adv(7), rec(7, 3), rec(8, 4), adv(10))
			},
			ranges: []Range{{0, 0, 2}, {7, 3, 2}},
			probes: []probe{
				{src: 1, want: 1}, {src: 2, want: 3}, {src: 3, want: 3}, {src: 6, want: 3}, {src: 7, want: 3},
				{src: 8, want: 4}, {src: 9, want: 5}, {src: 10, want: 5}, {src: 11, err: ErrBeyondMirrored},
			},
		},
		{
			name:   "gaps on both sides at once",
			m:      func(t *testing.T) *Map { return build(t, New(), rec(0, 0), rec(2, 2), rec(3, 3)) },
			ranges: []Range{{0, 0, 1}, {2, 2, 2}},
			probes: []probe{{src: 0, want: 0}, {src: 1, want: 2}, {src: 2, want: 2}, {src: 3, want: 3}, {src: 4, want: 4}},
		},
		{
			name:   "only absent offsets",
			m:      func(t *testing.T) *Map { return build(t, New(), adv(5)) },
			probes: []probe{{src: 0, want: 0}, {src: 5, want: 0}, {src: 6, err: ErrBeyondMirrored}},
		},
		{
			name: "started mid-log on a non-empty target",
			m: func(t *testing.T) *Map {
				return build(t, newAt(t, 100, 50), rec(105, 52), rec(106, 53))
			},
			ranges: []Range{{105, 52, 2}},
			probes: []probe{
				{src: 99, err: ErrBeforeMirrored}, {src: 100, want: 52}, {src: 105, want: 52},
				{src: 106, want: 53}, {src: 107, want: 54}, {src: 108, err: ErrBeyondMirrored},
			},
		},
		{
			name:   "started mid-log, nothing yet",
			m:      func(t *testing.T) *Map { return newAt(t, 100, 50) },
			probes: []probe{{src: 99, err: ErrBeforeMirrored}, {src: 100, want: 50}, {src: 101, err: ErrBeyondMirrored}},
		},
		{
			name: "trimmed inside a range",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), rec(2, 2), rec(5, 4), rec(6, 5), trim(1))
			},
			ranges: []Range{{1, 1, 2}, {5, 4, 2}},
			probes: []probe{{src: 0, err: ErrBeforeMirrored}, {src: 1, want: 1}, {src: 3, want: 4}, {src: 7, want: 6}},
		},
		{
			name: "trimmed in a gap",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), rec(5, 3), trim(3))
			},
			ranges: []Range{{5, 3, 1}},
			probes: []probe{{src: 2, err: ErrBeforeMirrored}, {src: 3, want: 3}, {src: 5, want: 3}, {src: 6, want: 4}},
		},
		{
			name: "trimmed beyond next",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), trim(10))
			},
			probes: []probe{{src: 1, err: ErrBeforeMirrored}, {src: 2, want: 2}, {src: 3, err: ErrBeyondMirrored}},
		},
		{
			name: "trim backwards does nothing",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(3, 0), trim(2), trim(1))
			},
			ranges: []Range{{3, 0, 1}},
			probes: []probe{{src: 1, err: ErrBeforeMirrored}, {src: 2, want: 0}, {src: 4, want: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m(t)
			if got := m.Ranges(); !slices.Equal(got, tt.ranges) {
				t.Fatalf("Ranges() = %v, want %v", got, tt.ranges)
			}
			for _, p := range tt.probes {
				got, err := m.Translate(p.src)
				if p.err != nil {
					if !errors.Is(err, p.err) {
						t.Errorf("Translate(%d) = %d, %v; want error %v", p.src, got, err, p.err)
					}
					continue
				}
				if err != nil || got != p.want {
					t.Errorf("Translate(%d) = %d, %v; want %d", p.src, got, err, p.want)
				}
			}
		})
	}
}

func TestTranslateErrorsNameTheNumbers(t *testing.T) {
	m := build(t, newAt(t, 10, 0), rec(10, 0), rec(11, 1))
	_, err := m.Translate(20)
	if !errors.Is(err, ErrBeyondMirrored) || err.Error() != "translate source offset 20: mirrored up to 12: "+ErrBeyondMirrored.Error() {
		t.Errorf("beyond: %v", err)
	}
	_, err = m.Translate(3)
	if !errors.Is(err, ErrBeforeMirrored) || err.Error() != "translate source offset 3: the map starts at 10: "+ErrBeforeMirrored.Error() {
		t.Errorf("before: %v", err)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name string
		do   func(m *Map) error
		want error
	}{
		{"record source repeats", func(m *Map) error { return m.Record(4, 10) }, ErrNotIncreasing},
		{"record source backwards", func(m *Map) error { return m.Record(2, 10) }, ErrNotIncreasing},
		{"record below next after advance", func(m *Map) error { return m.Record(7, 10) }, ErrNotIncreasing},
		{"record target repeats", func(m *Map) error { return m.Record(9, 4) }, ErrNotIncreasing},
		{"record target backwards", func(m *Map) error { return m.Record(9, 1) }, ErrNotIncreasing},
		{"record negative", func(m *Map) error { return m.Record(-1, 5) }, ErrInvalidOffset},
		{"record at max int64", func(m *Map) error { return m.Record(math.MaxInt64, 5) }, ErrInvalidOffset},
		{"advance backwards", func(m *Map) error { return m.Advance(7) }, ErrNotIncreasing},
		{"append empty range", func(m *Map) error { return m.AppendRange(Range{Src: 9, Tgt: 9, Len: 0}) }, ErrInvalidOffset},
		{"append overlapping range", func(m *Map) error { return m.AppendRange(Range{Src: 7, Tgt: 9, Len: 3}) }, ErrNotIncreasing},
		{"append overflowing range", func(m *Map) error { return m.AppendRange(Range{Src: 9, Tgt: 9, Len: math.MaxInt64}) }, ErrInvalidOffset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := build(t, New(), rec(0, 0), rec(4, 4), adv(8))
			before := EncodeValue(m)
			if err := tt.do(m); !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if after := EncodeValue(m); !bytes.Equal(before, after) {
				t.Fatal("a rejected call changed the map")
			}
		})
	}
	if _, err := NewAt(-1, 0); !errors.Is(err, ErrInvalidOffset) {
		t.Errorf("NewAt(-1, 0): %v", err)
	}
}

func TestAppendRangeMerges(t *testing.T) {
	m := build(t, New(), rec(0, 0))
	for _, r := range []Range{{1, 1, 4}, {5, 5, 2}, {9, 8, 1}} {
		if err := m.AppendRange(r); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := m.Ranges(), []Range{{0, 0, 7}, {9, 8, 1}}; !slices.Equal(got, want) {
		t.Fatalf("Ranges() = %v, want %v", got, want)
	}
	if m.Next() != 10 || m.TargetNext() != 9 {
		t.Fatalf("next %d targetNext %d", m.Next(), m.TargetNext())
	}
}

// TestAgainstReference runs random sequences of Record, Advance and
// TrimBefore on a Map and on a naive map of every offset, and compares
// every translation and the encoding round trip after each sequence.
func TestAgainstReference(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		ops := make([]byte, 2*(1+rng.IntN(200)))
		for i := range ops {
			ops[i] = byte(rng.Uint32())
		}
		// Mostly well-formed records, so maps grow.
		for i := 1; i < len(ops); i += 2 {
			if rng.IntN(10) > 0 {
				ops[i] &^= 0xc0
			}
		}
		m, ref := New(), newRef()
		applyOps(t, m, ref, ops)
		checkAgainst(t, m, ref)

		m2, err := DecodeValue(EncodeValue(m))
		if err != nil {
			t.Fatalf("seed %d: decode: %v", seed, err)
		}
		checkAgainst(t, m2, ref)
	}
}

func TestConcurrentUse(t *testing.T) {
	m := New()
	const n = 5000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := int64(0); i < n; i++ {
			if err := m.Record(2*i, 3*i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 3 {
		wg.Go(func() {
			for i := int64(0); i < n; i++ {
				next := m.Next()
				got, err := m.Translate(next)
				if err != nil {
					t.Error(err)
					return
				}
				// Next may have moved on since: the answer is a
				// target offset of at most the new TargetNext.
				if got > m.TargetNext() {
					t.Errorf("Translate(%d) = %d beyond TargetNext %d", next, got, m.TargetNext())
					return
				}
				if i%100 != 0 {
					continue
				}
				if _, err := DecodeValue(EncodeValue(m)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if m.Len() != n {
		t.Fatalf("%d ranges, want %d", m.Len(), n)
	}
}
