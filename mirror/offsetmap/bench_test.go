package offsetmap

import (
	"math/rand/v2"
	"testing"
)

const benchRanges = 100_000

// benchMap has n ranges of 100 records, each followed by a one-offset gap
// on both sides (a source control marker, a target commit marker).
func benchMap(b *testing.B, n int) *Map {
	b.Helper()
	m := New()
	for i := range int64(n) {
		if err := m.AppendRange(Range{Src: i * 101, Tgt: i * 101, Len: 100}); err != nil {
			b.Fatal(err)
		}
	}
	return m
}

// BenchmarkRecord appends to a map of 100k ranges: contiguous records
// extend the last range, and every 100th starts a new one.
func BenchmarkRecord(b *testing.B) {
	m := benchMap(b, benchRanges)
	src, tgt := m.Next()+1, m.TargetNext()+1
	b.ResetTimer()
	for i := range b.N {
		if i%100 == 0 {
			src++
			tgt++
		}
		if err := m.Record(src, tgt); err != nil {
			b.Fatal(err)
		}
		src++
		tgt++
	}
}

// BenchmarkTranslate translates random positions in a map of 100k ranges.
func BenchmarkTranslate(b *testing.B) {
	m := benchMap(b, benchRanges)
	rng := rand.New(rand.NewPCG(1, 2))
	next := m.Next()
	srcs := make([]int64, 1024)
	for i := range srcs {
		srcs[i] = rng.Int64N(next + 1)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := m.Translate(srcs[i%len(srcs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMarshal encodes a map of 100k ranges.
func BenchmarkMarshal(b *testing.B) {
	m := benchMap(b, benchRanges)
	b.ResetTimer()
	for range b.N {
		v := EncodeValue(m)
		b.SetBytes(int64(len(v)))
	}
}

// BenchmarkUnmarshal decodes a map of 100k ranges.
func BenchmarkUnmarshal(b *testing.B) {
	v := EncodeValue(benchMap(b, benchRanges))
	b.SetBytes(int64(len(v)))
	b.ResetTimer()
	for range b.N {
		if _, err := DecodeValue(v); err != nil {
			b.Fatal(err)
		}
	}
}
