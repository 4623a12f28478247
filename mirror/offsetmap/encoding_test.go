package offsetmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestEncodingRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    func(t *testing.T) *Map
	}{
		{"empty", func(t *testing.T) *Map { return New() }},
		{"started mid-log", func(t *testing.T) *Map { return newAt(t, 1<<40, 7) }},
		{"gaps everywhere", func(t *testing.T) *Map {
			return build(t, New(), rec(0, 0), rec(1, 1), rec(5, 3), rec(6, 4), adv(9), rec(20, 6), adv(30))
		}},
		{"trimmed", func(t *testing.T) *Map {
			return build(t, New(), rec(0, 0), rec(1, 1), rec(5, 3), rec(6, 4), trim(6))
		}},
		{"lost", func(t *testing.T) *Map {
			return build(t, New(), rec(0, 0), lose(5), rec(5, 2), adv(7), lose(9), rec(20, 3))
		}},
		{"lost at start, started mid-log", func(t *testing.T) *Map { return build(t, newAt(t, 1<<40, 7), lose(1<<40+3)) }},
		{"lost, then trimmed", func(t *testing.T) *Map {
			return build(t, New(), rec(0, 0), lose(5), rec(5, 2), trim(3))
		}},
		{"large offsets", func(t *testing.T) *Map {
			return build(t, New(), rec(math.MaxInt64/2, math.MaxInt64/3), rec(math.MaxInt64-2, math.MaxInt64-2), adv(math.MaxInt64))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m(t)
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got := New()
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if got.Start() != m.Start() || got.Next() != m.Next() || got.TargetNext() != m.TargetNext() ||
				!slices.Equal(got.Ranges(), m.Ranges()) || !slices.Equal(got.Lost(), m.Lost()) {
				t.Fatalf("decoded %v %d/%d/%d, want %v %d/%d/%d", got.Ranges(), got.Start(), got.Next(), got.TargetNext(),
					m.Ranges(), m.Start(), m.Next(), m.TargetNext())
			}
			if b2 := EncodeValue(got); !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs: %x vs %x", b, b2)
			}
			if want := map[bool]byte{false: 1, true: 2}[len(m.Lost()) > 0]; b[0] != want {
				t.Fatalf("version %d, want %d (2 only with lost ranges)", b[0], want)
			}
		})
	}
}

// TestEncodingGolden pins version 1 of the value format byte by byte.
func TestEncodingGolden(t *testing.T) {
	// Start 0; ranges {0,0,3} and {5,4,200}; Next 210; TargetNext 204.
	m := build(t, New(), rec(0, 0), rec(1, 1), rec(2, 2))
	for i := int64(0); i < 200; i++ {
		if err := m.Record(5+i, 4+i); err != nil {
			t.Fatal(err)
		}
	}
	build(t, m, adv(210))
	want := []byte{
		1,       // version
		0,       // start
		2,       // ranges
		0, 0, 3, // src gap, tgt (absolute), len
		2, 1, 0xc8, 0x01, // src gap 2, tgt gap 1 (a commit marker), len 200
		5, // next - 205
		0, // targetNext - 204
	}
	if got := EncodeValue(m); !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %v\nwant %v", got, want)
	}
}

// TestEncodingGoldenV2 pins version 2: version 1's fields, then the lost
// ranges.
func TestEncodingGoldenV2(t *testing.T) {
	// Start 0; range {0,0,2}; lost 2..4 and 6..6; range {7,3,1}; Next 8;
	// TargetNext 4.
	m := build(t, New(), rec(0, 0), rec(1, 1), lose(5), adv(6), lose(7), rec(7, 3))
	want := []byte{
		2,       // version
		0,       // start
		2,       // ranges
		0, 0, 2, // src gap, tgt, len
		5, 1, 1, // src gap 5, tgt gap 1, len 1
		0,    // next - 8
		0,    // targetNext - 4
		2,    // lost ranges
		2, 3, // from - start, len
		1, 1, // from - 5, len
	}
	if got := EncodeValue(m); !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %v\nwant %v", got, want)
	}
}

// TestEncodedSizePerRange backs the growth estimate in the package
// comment: a range per transaction of 100 records with a one-offset commit
// marker on the target and a control marker on the source costs 3 bytes;
// with 1,000 records, 4.
func TestEncodedSizePerRange(t *testing.T) {
	for _, tc := range []struct {
		perTxn   int64
		maxBytes float64
	}{{100, 3}, {1000, 4}, {10000, 4}} {
		m := New()
		var src, tgt int64
		const txns = 10000
		for range txns {
			if err := m.AppendRange(Range{Src: src, Tgt: tgt, Len: tc.perTxn}); err != nil {
				t.Fatal(err)
			}
			src += tc.perTxn + 1 // the source's own transaction marker
			tgt += tc.perTxn + 1 // our commit marker
		}
		per := float64(len(EncodeValue(m))) / txns
		t.Logf("%d records per transaction: %.2f bytes per range", tc.perTxn, per)
		if per > tc.maxBytes+0.01 {
			t.Errorf("%d records per transaction: %.2f bytes per range, documented %v", tc.perTxn, per, tc.maxBytes)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	valid := EncodeValue(build(t, New(), rec(0, 0), rec(1, 1), rec(5, 3), adv(9)))
	uv := func(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"nil", nil, "empty"},
		{"unknown version", []byte{3, 0, 0, 0, 0}, "version 3"},
		{"version 0", []byte{0, 0, 0, 0, 0}, "version 0"},
		{"truncated", valid[:len(valid)-1], "truncated"},
		{"trailing bytes", append(slices.Clone(valid), 0), "trailing"},
		{"count beyond the input", []byte{1, 0, 100, 0, 0, 1}, "ranges in"},
		{"huge count", uv([]byte{1, 0}, math.MaxUint64), "ranges in"},
		{"zero-length range", []byte{1, 0, 1, 0, 0, 0, 0, 0}, "length 0"},
		{"unmerged ranges", []byte{1, 0, 2, 0, 0, 1, 0, 0, 1, 0, 0}, "not merged"},
		{"start overflows int64", append(uv([]byte{1}, math.MaxInt64+1), 0, 0, 0), "overflows int64"},
		{"offsets overflow", append(uv(uv([]byte{1}, math.MaxInt64), 1), 1, 0, 1, 0, 0), "overflows int64"},
		{"overlong varint", []byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0}, "varint"},
		{"non-minimal varint", []byte{1, 0x80, 0x00, 0, 0, 0}, "non-minimal"},
		// Version 2: start 0, one range 0..1 at 0, next 10, target next 2,
		// then the lost ranges.
		{"v2 without lost ranges", []byte{2, 0, 1, 0, 0, 2, 8, 0, 0}, "without lost ranges"},
		{"v2 lost count beyond the input", []byte{2, 0, 1, 0, 0, 2, 8, 0, 5, 2, 1}, "lost ranges in"},
		{"v2 zero-length lost range", []byte{2, 0, 1, 0, 0, 2, 8, 0, 1, 3, 0}, "length 0"},
		{"v2 unmerged lost ranges", []byte{2, 0, 1, 0, 0, 2, 8, 0, 2, 3, 1, 0, 1}, "not merged"},
		{"v2 lost beyond next", []byte{2, 0, 1, 0, 0, 2, 8, 0, 1, 3, 8}, "beyond next"},
		{"v2 lost offsets copied", []byte{2, 0, 1, 0, 0, 2, 8, 0, 1, 1, 2}, "overlap"},
		{"v2 truncated", []byte{2, 0, 1, 0, 0, 2, 8, 0, 1, 3, 0x80}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := build(t, New(), rec(3, 3))
			err := m.UnmarshalBinary(tt.b)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrCorrupt mentioning %q", err, tt.want)
			}
			if got := m.Ranges(); !slices.Equal(got, []Range{{3, 3, 1}}) {
				t.Fatalf("a failed decode changed the map: %v", got)
			}
		})
	}
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		topic     string
		partition int32
	}{{"orders", 0}, {"a", math.MaxInt32}, {strings.Repeat("t", 249), 7}} {
		k := EncodeKey(tc.topic, tc.partition)
		topic, p, err := DecodeKey(k)
		if err != nil || topic != tc.topic || p != tc.partition {
			t.Errorf("DecodeKey(EncodeKey(%q, %d)) = %q, %d, %v", tc.topic, tc.partition, topic, p, err)
		}
	}
	if got, want := EncodeKey("ab", 258), []byte{1, 2, 'a', 'b', 0, 0, 1, 2}; !bytes.Equal(got, want) {
		t.Errorf("EncodeKey(ab, 258) = %v, want %v", got, want)
	}
	for name, b := range map[string][]byte{
		"empty":              nil,
		"unknown version":    {2, 1, 'a', 0, 0, 0, 0},
		"empty topic":        {1, 0, 0, 0, 0, 0},
		"short":              {1, 2, 'a', 0, 0, 0, 0},
		"long":               {1, 1, 'a', 0, 0, 0, 0, 0},
		"negative partition": {1, 1, 'a', 0xff, 0xff, 0xff, 0xff},
		"topic too long":     append(binary.AppendUvarint([]byte{1}, 250), make([]byte, 254)...),
	} {
		if _, _, err := DecodeKey(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: DecodeKey(%v) error %v, want ErrCorrupt", name, b, err)
		}
	}
}

// FuzzUnmarshal: any input either fails with ErrCorrupt or decodes to a
// map that satisfies the invariants and re-encodes to the same bytes (the
// decoder accepts only the canonical form). It never panics.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 2, 0, 0, 3, 2, 1, 0xc8, 0x01, 5, 0})
	f.Add([]byte{2, 0, 2, 0, 0, 2, 5, 1, 1, 0, 0, 2, 2, 3, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := New()
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if err := checkInvariants(m); err != nil {
			t.Fatalf("decoded %x: %v", b, err)
		}
		if got := EncodeValue(m); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded %x as %x", b, got)
		}
		// Translating anything must not panic.
		for _, s := range []int64{-1, 0, m.Start(), m.Next(), m.Next() + 1, math.MaxInt64} {
			_, _ = m.Translate(s)
			_, _, _ = m.Resume(s)
		}
	})
}

// FuzzTranslate: a map built from arbitrary operations answers every
// translation like the naive reference map of every offset, and the same
// operations written as encoded deltas and merged build the same map.
func FuzzTranslate(f *testing.F) {
	f.Add([]byte{0, 0x08, 0, 0x08, 2, 3, 0, 0x05}, int64(2))
	f.Add([]byte{0, 0x08, 4, 0x02, 0, 0x09, 2, 1, 4, 0x00, 3, 0x02}, int64(2)) // lost ranges, trimmed

	f.Fuzz(func(t *testing.T, ops []byte, src int64) {
		if len(ops) > 512 {
			ops = ops[:512]
		}
		m, ref := New(), newRef()
		applyOps(t, m, ref, ops)
		compareTranslate(t, m, ref, src)
		checkAgainst(t, m, ref)
	})
}
