package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestPayloadsExactSizeAndDeterministic(t *testing.T) {
	for _, size := range []int{64, 100, 1024, 4096} {
		a, b := newPayloads(7, size), newPayloads(7, size)
		for i := 0; i < 200; i++ {
			ka, va := a.next()
			kb, vb := b.next()
			if len(ka) != keyBytes || len(va) != size {
				t.Fatalf("size %d: key %d bytes, value %d bytes", size, len(ka), len(va))
			}
			if !bytes.Equal(ka, kb) || !bytes.Equal(va, vb) {
				t.Fatalf("size %d: record %d differs between two generators with the same seed", size, i)
			}
		}
	}
	// Values are fresh slices: the next record does not overwrite them.
	g := newPayloads(1, 1024)
	_, v1 := g.next()
	keep := append([]byte(nil), v1...)
	g.next()
	if !bytes.Equal(v1, keep) {
		t.Fatal("a value changed after the next one was generated")
	}
	// Valid JSON at the default size (the text field is closed).
	var m map[string]any
	if err := json.Unmarshal(keep, &m); err != nil {
		t.Fatalf("value is not JSON: %v\n%s", err, keep)
	}
}

func TestProgress(t *testing.T) {
	start := map[int32]int64{0: 0, 1: 10}
	end := map[int32]int64{0: 100, 1: 60}
	cases := []struct {
		pos      map[int32]int64
		copied   int64
		complete bool
	}{
		{map[int32]int64{}, 0, false},
		{map[int32]int64{0: 40, 1: 5}, 40, false},
		{map[int32]int64{0: 100, 1: 59}, 149, false},
		{map[int32]int64{0: 100, 1: 60}, 150, true},
		{map[int32]int64{0: 108, 1: 64}, 150, true}, // commit markers past the end are capped
	}
	for _, c := range cases {
		copied, complete := progress(c.pos, start, end)
		if copied != c.copied || complete != c.complete {
			t.Errorf("progress(%v) = %d, %v; want %d, %v", c.pos, copied, complete, c.copied, c.complete)
		}
	}
}

func TestFormat(t *testing.T) {
	for x, want := range map[float64]string{1234.5: "1234", 42.25: "42.2", 1.2345: "1.23", 0.01234: "0.0123"} {
		if got := f(x); got != want {
			t.Errorf("f(%v) = %q, want %q", x, got, want)
		}
	}
	nan := 0.0
	if got := f(nan / nan); got != "n/a" {
		t.Errorf("f(NaN) = %q", got)
	}
}
