package main

import (
	"strings"
	"testing"
	"time"
)

func TestPct(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, tt := range []struct {
		p    float64
		want float64
	}{{0, 1}, {0.2, 1}, {0.5, 3}, {0.99, 5}, {1, 5}} {
		if got := pct(xs, tt.p); got != tt.want {
			t.Errorf("pct(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if pct(nil, 0.5) != 0 {
		t.Error("pct of nothing is not 0")
	}
	if xs[0] != 5 {
		t.Error("pct sorted its input")
	}
}

func TestParseValue(t *testing.T) {
	p := &producer{id: 7, pad: strings.Repeat("x", 30)}
	v := string(p.recordValue(123))
	if len(v) != 30 {
		t.Errorf("value %q: %d bytes, want 30", v, len(v))
	}
	if id, seq, ok := parseValue(v); !ok || id != 7 || seq != 123 {
		t.Errorf("parseValue(%q) = %d, %d, %v", v, id, seq, ok)
	}
	for _, bad := range []string{"", "x", "p1-2", "q1-2|", "p1|", "pa-1|"} {
		if _, _, ok := parseValue(bad); ok {
			t.Errorf("parseValue(%q) accepted", bad)
		}
	}
}

// fakeProducer is a producer that handed over n records, all acknowledged.
func fakeProducer(id, n int) *producer {
	p := &producer{id: id, pad: strings.Repeat("x", 24)}
	now := time.Now()
	for range n {
		p.sent = append(p.sent, now)
		p.acked = append(p.acked, now)
		p.failed = append(p.failed, false)
	}
	return p
}

func rec(p *producer, seq int) [2]string {
	return [2]string{recordKey(p.id, seq), string(p.recordValue(seq))}
}

func TestCheckTarget(t *testing.T) {
	p0, p1 := fakeProducer(0, 3), fakeProducer(1, 2)
	good := map[int32][][2]string{
		0: {rec(p0, 0), rec(p0, 1), rec(p1, 0)},
		1: {rec(p0, 2), rec(p1, 1)},
	}
	if n, problems := checkTarget(good, []*producer{p0, p1}); n != 5 || len(problems) != 0 {
		t.Fatalf("correct target: %d records, problems %q", n, problems)
	}
	tests := []struct {
		name   string
		target map[int32][][2]string
		want   string
	}{
		{"missing", map[int32][][2]string{0: {rec(p0, 0), rec(p0, 1), rec(p1, 0)}, 1: {rec(p1, 1)}}, "p0-2 is on the target 0 times"},
		{"duplicate", map[int32][][2]string{0: {rec(p0, 0), rec(p0, 1), rec(p1, 0)}, 1: {rec(p0, 2), rec(p0, 2), rec(p1, 1)}}, "p0-2 is on the target 2 times"},
		{"never produced", map[int32][][2]string{0: {rec(p0, 0), rec(p0, 1), rec(p1, 0), {"k", "junk"}}, 1: {rec(p0, 2), rec(p1, 1)}}, "never produced"},
		{"unknown sequence", map[int32][][2]string{0: {rec(p0, 0), rec(p0, 1), rec(p1, 0), rec(p1, 9)}, 1: {rec(p0, 2), rec(p1, 1)}}, "never handed to a producer"},
	}
	for _, tt := range tests {
		_, problems := checkTarget(tt.target, []*producer{p0, p1})
		if !strings.Contains(strings.Join(problems, "\n"), tt.want) {
			t.Errorf("%s: problems %q, want one with %q", tt.name, problems, tt.want)
		}
	}
	// Out of order within a key: key p0-k0 holds seq 0 and 8.
	p2 := fakeProducer(2, 9)
	var recs [][2]string
	for seq := 1; seq < 8; seq++ {
		recs = append(recs, rec(p2, seq))
	}
	recs = append(recs, rec(p2, 8), rec(p2, 0))
	if _, problems := checkTarget(map[int32][][2]string{0: recs}, []*producer{p0, p1, p2}); !strings.Contains(strings.Join(problems, "\n"), "out of order") {
		t.Errorf("reordered key not found: %q", problems)
	}
	// A refused record is a problem even when absent.
	p3 := fakeProducer(0, 1)
	p3.acked[0], p3.failed[0], p3.nFailed = time.Time{}, true, 1
	if _, problems := checkTarget(nil, []*producer{p3}); !strings.Contains(strings.Join(problems, "\n"), "refused") {
		t.Errorf("refused record not reported: %q", problems)
	}
}

func TestCaughtUpAt(t *testing.T) {
	t0 := time.Now()
	s := mirrorSamples{
		at:   []time.Time{t0, t0.Add(time.Millisecond), t0.Add(2 * time.Millisecond)},
		next: [][]int64{{1, 5}, {3, 4}, {3, 5}},
	}
	if got := s.caughtUpAt(map[int32]int64{0: 3, 1: 5}); !got.Equal(t0.Add(2 * time.Millisecond)) {
		t.Errorf("caughtUpAt = %v, want the third sample", got.Sub(t0))
	}
	if got := s.caughtUpAt(map[int32]int64{0: 4}); !got.IsZero() {
		t.Errorf("caughtUpAt of an unreached end = %v, want zero", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-sidecars", "1, 5", "-gate-mode", "reject"})
	if err != nil || len(o.sidecars) != 2 || o.sidecars[1] != 5 || o.gateMode != "REJECT" || o.runs != 10 {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-sidecars", "0"}, {"-kafka", "x"}, {"-gate-mode", "PAUSE"}, {"-value-bytes", "3"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}
