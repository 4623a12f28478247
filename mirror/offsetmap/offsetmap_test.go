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

// step builds a map in tests: one Record, Advance, TrimBefore or SkipLost.
type step struct {
	op       byte // 'r' record, 'a' advance, 't' trim, 'l' skip lost
	src, tgt int64
}

func rec(src, tgt int64) step { return step{'r', src, tgt} }
func adv(next int64) step     { return step{op: 'a', src: next} }
func trim(src int64) step     { return step{op: 't', src: src} }
func lose(to int64) step      { return step{op: 'l', src: to} }

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
		case 'l':
			_, err = m.SkipLost(s.src)
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
		{
			// Source: 0-1 copied, 2-4 deleted before the copy, 5 a
			// marker, 6-7 copied; then 8-9 lost at the end.
			name: "lost offsets",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), lose(5), adv(6), rec(6, 3), rec(7, 4), lose(10))
			},
			ranges: []Range{{0, 0, 2}, {6, 3, 2}},
			probes: []probe{
				{src: 1, want: 1}, {src: 2, err: ErrLost}, {src: 4, err: ErrLost},
				{src: 5, want: 3}, {src: 6, want: 3}, {src: 7, want: 4}, // exact after the gap
				{src: 8, err: ErrLost}, {src: 9, err: ErrLost}, {src: 10, want: 5}, {src: 11, err: ErrBeyondMirrored},
			},
		},
		{
			// An absent offset (a marker at 2) in front of lost ones: the
			// position needs the lost records too.
			name: "absent offsets before lost ones",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), rec(1, 1), adv(3), lose(6), rec(6, 3))
			},
			ranges: []Range{{0, 0, 2}, {6, 3, 1}},
			probes: []probe{{src: 1, want: 1}, {src: 2, err: ErrLost}, {src: 5, err: ErrLost}, {src: 6, want: 3}, {src: 7, want: 4}},
		},
		{
			name: "lost, then trimmed",
			m: func(t *testing.T) *Map {
				return build(t, New(), rec(0, 0), lose(5), rec(5, 2), lose(8), rec(8, 3), trim(3))
			},
			ranges: []Range{{5, 2, 1}, {8, 3, 1}},
			probes: []probe{{src: 2, err: ErrBeforeMirrored}, {src: 3, err: ErrLost}, {src: 5, want: 2}, {src: 6, err: ErrLost}, {src: 8, want: 3}},
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

func TestLostRanges(t *testing.T) {
	m := build(t, New(), rec(0, 0), lose(5))
	if r, err := m.SkipLost(9); err != nil || r != (LostRange{5, 9}) {
		t.Fatalf("SkipLost(9) = %v, %v; want 5..8 (extending 1..4)", r, err)
	}
	build(t, m, adv(10), lose(12), rec(12, 1))
	if got, want := m.Lost(), []LostRange{{1, 9}, {10, 12}}; !slices.Equal(got, want) {
		t.Fatalf("Lost() = %v, want %v (adjacent ranges merged, one separated by an absent offset kept apart)", got, want)
	}
	_, err := m.Translate(3)
	if !errors.Is(err, ErrLost) || err.Error() != "translate source offset 3: offsets 1..8 were deleted on the source before they were mirrored: "+ErrLost.Error() {
		t.Errorf("Translate(3): %v", err)
	}
	for _, tc := range []struct{ src, tgt, from int64 }{
		{0, 0, 0},  // copied: as Translate
		{3, 1, 12}, // past both lost ranges, to the record at 12
		{9, 1, 12}, // an absent offset in front of lost ones
		{12, 1, 12},
		{13, 2, 13}, // Next
	} {
		tgt, from, err := m.Resume(tc.src)
		if err != nil || tgt != tc.tgt || from != tc.from {
			t.Errorf("Resume(%d) = %d, %d, %v; want %d, %d", tc.src, tgt, from, err, tc.tgt, tc.from)
		}
	}
	if _, _, err := m.Resume(14); !errors.Is(err, ErrBeyondMirrored) {
		t.Errorf("Resume(14): %v, want ErrBeyondMirrored", err)
	}
	m.TrimBefore(4)
	if got, want := m.Lost(), []LostRange{{4, 9}, {10, 12}}; !slices.Equal(got, want) {
		t.Fatalf("after TrimBefore(4): Lost() = %v, want %v", got, want)
	}
	if tgt, from, err := m.Resume(2); err != nil || tgt != 1 || from != 12 {
		t.Errorf("Resume(2) below Start = %d, %d, %v; want 1, 12 (taken as Start 4)", tgt, from, err)
	}
	m.TrimBefore(11)
	if got, want := m.Lost(), []LostRange{{11, 12}}; !slices.Equal(got, want) {
		t.Fatalf("after TrimBefore(11): Lost() = %v, want %v", got, want)
	}
}

func TestMerge(t *testing.T) {
	m := build(t, New(), rec(0, 0), rec(1, 1), lose(4))
	d := build(t, newAt(t, 4, 0), lose(6), rec(6, 3), lose(9), adv(11))
	if err := m.Merge(d); err != nil {
		t.Fatal(err)
	}
	if got, want := m.Ranges(), []Range{{0, 0, 2}, {6, 3, 1}}; !slices.Equal(got, want) {
		t.Errorf("Ranges() = %v, want %v", got, want)
	}
	if got, want := m.Lost(), []LostRange{{2, 6}, {7, 9}}; !slices.Equal(got, want) {
		t.Errorf("Lost() = %v, want %v", got, want)
	}
	if m.Next() != 11 || m.TargetNext() != 4 {
		t.Errorf("next %d targetNext %d, want 11 4", m.Next(), m.TargetNext())
	}
	// A delta starting beyond Next: absent offsets in between.
	if err := m.Merge(build(t, newAt(t, 20, 0), rec(20, 9))); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Translate(15); err != nil || got != 9 || m.Start() != 0 {
		t.Errorf("after a delta from 20: Translate(15) = %d, %v, start %d; want 9 (absent), start 0", got, err, m.Start())
	}
	// On a map holding nothing yet, the same delta moves Start: the copy
	// begins there.
	begin := New()
	if err := begin.Merge(build(t, newAt(t, 20, 0))); err != nil {
		t.Fatal(err)
	}
	if begin.Start() != 20 || begin.Next() != 20 {
		t.Errorf("begun at 20: start %d next %d", begin.Start(), begin.Next())
	}
	if _, err := begin.Translate(15); !errors.Is(err, ErrBeforeMirrored) {
		t.Errorf("begun at 20: Translate(15): %v, want ErrBeforeMirrored", err)
	}
	before := EncodeValue(m)
	for name, d := range map[string]*Map{
		"lost below next":     build(t, newAt(t, 10, 0), lose(12)),
		"range below next":    build(t, New(), rec(10, 5)),
		"target below target": build(t, New(), rec(21, 3)),
	} {
		if err := m.Merge(d); !errors.Is(err, ErrNotIncreasing) {
			t.Errorf("%s: Merge: %v, want ErrNotIncreasing", name, err)
		}
		if !bytes.Equal(before, EncodeValue(m)) {
			t.Fatalf("%s: a refused merge changed the map", name)
		}
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
		{"skip lost to next", func(m *Map) error { _, err := m.SkipLost(8); return err }, ErrNotIncreasing},
		{"skip lost backwards", func(m *Map) error { _, err := m.SkipLost(3); return err }, ErrNotIncreasing},
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
