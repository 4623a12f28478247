package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// TestRenderFrame compares the live frame with golden text: state and
// clock in, frame out.
func TestRenderFrame(t *testing.T) {
	drain := proto.Clone(doneScript("c-1")[3]).(*switchyardv1.Cutover)
	drain.History[2].Detail = "waiting for the mirror: 12 records"
	drain.Sidecars[1].Connected = false

	flip := proto.Clone(doneScript("c-1")[4]).(*switchyardv1.Cutover)
	flip.Sidecars[0].AppliedVersion = 8
	flip.Sidecars[1].ApplyError = "cluster \"target\"\nnot configured"
	flip.AbortRequested = true
	flip.GroupOffsets = []*switchyardv1.GroupOffset{
		{Group: "billing", Topic: "orders", Partition: 0, Source: 10, Target: 12, Outcome: "committed"},
		{Group: "billing", Topic: "orders", Partition: 1, Source: 4, Target: 4, Outcome: "unchanged"},
		{Group: "billing", Topic: "orders", Partition: 2, Source: 7, Target: 9, Outcome: "committed"},
	}

	var many []*switchyardv1.SidecarAck
	for i := range 8 {
		a := &switchyardv1.SidecarAck{App: "orders-service", Instance: fmt.Sprintf("orders-%d", i), Connected: true, WantVersion: 7, AppliedVersion: 7}
		if i%3 == 1 {
			a.AppliedVersion = 6
		}
		many = append(many, a)
	}
	gate := proto.Clone(doneScript("c-1")[2]).(*switchyardv1.Cutover)
	gate.Sidecars = many

	noHistory := &switchyardv1.Cutover{Id: "c-5", Step: stPreflight,
		Spec: &switchyardv1.CutoverSpec{Selector: &switchyardv1.SidecarSelector{Apps: []string{"a"}}, Source: "s", Target: "t",
			Policy: &switchyardv1.CutoverPolicy{GateMode: "REJECT"}}}

	tests := []struct {
		name string
		cut  *switchyardv1.Cutover
		now  time.Duration // after t0
		opts frameOptions
		want string
	}{
		{
			name: "draining", cut: drain, now: 2900 * time.Millisecond,
			want: `cutover c-1  DRAIN  2.9s
  orders-service,billing (role=producer)  source → target  gate HOLD  mirror orders

  ✓ PREFLIGHT    300ms  2/2 sidecars connected, mirror lag 12
  ✓ GATE         100ms  2/2 sidecars acknowledged version 7
  ▶ DRAIN        2.5s   waiting for the mirror: 12 records
  · SYNC_GROUPS
  · FLIP
  · RELEASE
  · VERIFY
  · DONE

  sidecars  2/2 applied
    orders-service/orders-0  connected     applied 7/7  ✓
    billing/billing-0        disconnected  applied 7/7  ✓

  mirror lag  12 records
  gated for   2.5s (since 04:15:02.400Z)
`,
		},
		{
			name: "flipping, abort asked, a sidecar failing", cut: flip, now: 1750 * time.Millisecond,
			opts: frameOptions{note: "connection to 127.0.0.1:9180 lost (EOF); reconnecting"},
			want: `cutover c-1  FLIP  1.8s  (abort requested)
  orders-service,billing (role=producer)  source → target  gate HOLD  mirror orders

  ✓ PREFLIGHT    300ms  2/2 sidecars connected, mirror lag 12
  ✓ GATE         100ms  2/2 sidecars acknowledged version 7
  ✓ DRAIN        1.0s   in-flight produce answered; mirror caught up
  ✓ SYNC_GROUPS  100ms  1 group, 3 partitions
  ▶ FLIP         250ms
  · RELEASE
  · VERIFY
  · DONE

  sidecars  1/2 applied
    billing/billing-0        connected  applied 7/8  apply error: cluster "target" not configured
    orders-service/orders-0  connected  applied 8/8  ✓

  mirror lag     0 records
  gated for      1.4s (since 04:15:02.400Z)
  group offsets  2 committed, 1 unchanged

  ! connection to 127.0.0.1:9180 lost (EOF); reconnecting
`,
		},
		{
			name: "rolled back", cut: rolledBackScript("c-2")[3], now: time.Hour,
			want: `cutover c-2  ROLLED_BACK  1.2s
  orders-service,billing (role=producer)  source → target  gate HOLD  mirror orders

  ✓ PREFLIGHT     300ms  2/2 sidecars connected
  ✓ GATE          100ms  2/2 sidecars acknowledged version 7
  ✗ DRAIN         600ms  aborted
  ✓ ROLLING_BACK  200ms  2/2 sidecars back on source
  ✗ ROLLED_BACK

  sidecars  2/2 applied
    orders-service/orders-0  connected  applied 8/8  ✓
    billing/billing-0        connected  applied 8/8  ✓

  mirror lag    500 records
  block window  800ms (gated 04:15:02.400Z, released 04:15:03.200Z)
  error         aborted by operator: mirror too slow
`,
		},
		{
			name: "many sidecars, the waiting ones first", cut: gate, now: 400 * time.Millisecond, opts: frameOptions{maxSidecars: 4},
			want: `cutover c-1  GATE  400ms
  orders-service,billing (role=producer)  source → target  gate HOLD  mirror orders

  ✓ PREFLIGHT    300ms  2/2 sidecars connected, mirror lag 12
  ▶ GATE         100ms
  · DRAIN
  · SYNC_GROUPS
  · FLIP
  · RELEASE
  · VERIFY
  · DONE

  sidecars  5/8 applied
    orders-service/orders-1  connected  applied 6/7  waiting
    orders-service/orders-4  connected  applied 6/7  waiting
    orders-service/orders-7  connected  applied 6/7  waiting
    orders-service/orders-0  connected  applied 7/7  ✓
    … and 4 more (4 applied)

  mirror lag  12 records
`,
		},
		{
			name: "no history yet", cut: noHistory, now: time.Second,
			want: `cutover c-5  PREFLIGHT
  a  s → t  gate REJECT

  ▶ PREFLIGHT
  · GATE
  · DRAIN
  · SYNC_GROUPS
  · FLIP
  · RELEASE
  · VERIFY
  · DONE

  mirror lag  0 records
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := renderFrame(tt.cut, t0.Add(tt.now), tt.opts)
			if got != tt.want {
				t.Errorf("frame:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestTermDisplay: the first frame is drawn where the cursor is; every
// later one moves back up over the previous frame's lines and clears to
// the end of the screen first. Lines are cut to the terminal's width.
func TestTermDisplay(t *testing.T) {
	var buf bytes.Buffer
	now := t0.Add(2 * time.Second)
	d := newTermDisplay(&buf, func() time.Time { return now }, func() int { return 30 })
	d.every = time.Hour // no redraw between the states of this test
	script := doneScript("c-1")

	frameOf := func(c *switchyardv1.Cutover, note string) (string, int) {
		f := renderFrame(c, now, frameOptions{maxSidecars: termMaxSidecars, note: note})
		lines := strings.Split(strings.TrimSuffix(f, "\n"), "\n")
		for i, l := range lines {
			lines[i] = truncateRunes(l, 29)
		}
		return strings.Join(lines, "\n") + "\n", len(lines)
	}
	take := func() string {
		d.mu.Lock()
		defer d.mu.Unlock()
		s := buf.String()
		buf.Reset()
		return s
	}

	if err := d.show(&switchyardv1.WatchCutoverResponse{Cutover: script[0]}); err != nil {
		t.Fatal(err)
	}
	f1, n1 := frameOf(script[0], "")
	if got, want := take(), "\r\x1b[J"+f1; got != want {
		t.Errorf("first draw:\n%q\nwant\n%q", got, want)
	}
	if strings.Contains(f1, "orders-service,billing (role=producer)") {
		t.Errorf("a line wider than the terminal was not cut:\n%s", f1)
	}
	if !strings.Contains(f1, "\n  orders-service,billing (ro…\n") {
		t.Errorf("want the cut line to end in an ellipsis:\n%s", f1)
	}

	d.note("connection lost; reconnecting")
	f2, n2 := frameOf(script[0], "connection lost; reconnecting")
	if got, want := take(), fmt.Sprintf("\x1b[%dA\r\x1b[J", n1)+f2; got != want {
		t.Errorf("redraw with a note:\n%q\nwant\n%q", got, want)
	}

	if err := d.show(&switchyardv1.WatchCutoverResponse{Cutover: script[6]}); err != nil {
		t.Fatal(err)
	}
	f3, _ := frameOf(script[6], "")
	if got, want := take(), fmt.Sprintf("\x1b[%dA\r\x1b[J", n2)+f3; got != want {
		t.Errorf("redraw:\n%q\nwant\n%q", got, want)
	}
	d.close()
	d.close() // twice is fine
}

// TestTermDisplayRedraws: between states the frame is redrawn so the
// running step's duration moves.
func TestTermDisplayRedraws(t *testing.T) {
	var buf bytes.Buffer
	start := time.Now()
	d := newTermDisplay(&buf, func() time.Time { return t0.Add(time.Since(start)) }, func() int { return 0 })
	d.every = time.Millisecond
	if err := d.show(&switchyardv1.WatchCutoverResponse{Cutover: doneScript("c-1")[0]}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		d.mu.Lock()
		n := strings.Count(buf.String(), "\r\x1b[J")
		d.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d draws in 10s, want at least 3", n)
		}
		time.Sleep(time.Millisecond)
	}
	d.close()
	d.mu.Lock()
	n := buf.Len()
	d.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	d.mu.Lock()
	defer d.mu.Unlock()
	if buf.Len() != n {
		t.Errorf("the display drew after close")
	}
}

// TestLineDisplay: sidecars that disconnect or fail to apply get a line;
// mirror-lag lines are throttled to one a second, except the one that
// says the mirror caught up.
func TestLineDisplay(t *testing.T) {
	clock := t0
	var buf bytes.Buffer
	d := &lineDisplay{w: &buf, now: func() time.Time { return clock }}
	base := doneScript("c-1")[3] // DRAIN, lag 12
	state := func(updated int, lag int64, edit func(*switchyardv1.Cutover)) *switchyardv1.WatchCutoverResponse {
		c := proto.Clone(base).(*switchyardv1.Cutover)
		c.Updated, c.MirrorLag = at(updated), lag
		if edit != nil {
			edit(c)
		}
		return &switchyardv1.WatchCutoverResponse{Cutover: c}
	}
	steps := []struct {
		after time.Duration
		resp  *switchyardv1.WatchCutoverResponse
	}{
		{0, state(400, 500, nil)},
		{500 * time.Millisecond, state(900, 450, nil)}, // within a second: no line
		{700 * time.Millisecond, state(1600, 300, func(c *switchyardv1.Cutover) {
			c.Sidecars[1].Connected = false
		})},
		{100 * time.Millisecond, state(1700, 0, func(c *switchyardv1.Cutover) { // caught up: a line at once
			c.Sidecars[1].Connected = false
			c.Sidecars[0].ApplyError = "boom"
		})},
		{100 * time.Millisecond, state(1800, 0, nil)},
	}
	for _, s := range steps {
		clock = clock.Add(s.after)
		if err := d.show(s.resp); err != nil {
			t.Fatal(err)
		}
	}
	want := `cutover c-1: orders-service,billing (role=producer) from source to target, gate HOLD, mirror orders
04:15:02.000Z PREFLIGHT started
04:15:02.300Z PREFLIGHT done in 300ms: 2/2 sidecars connected, mirror lag 12
04:15:02.300Z GATE started
04:15:02.400Z GATE done in 100ms: 2/2 sidecars acknowledged version 7
04:15:02.400Z DRAIN started
04:15:02.400Z DRAIN mirror lag 500 records
04:15:03.600Z DRAIN sidecar billing/billing-0 disconnected
04:15:03.600Z DRAIN mirror lag 300 records
04:15:03.700Z DRAIN sidecar orders-service/orders-0: apply error: boom
04:15:03.700Z DRAIN sidecars 1/2 acknowledged version 7
04:15:03.700Z DRAIN mirror lag 0 records
04:15:03.800Z DRAIN sidecar billing/billing-0 connected
04:15:03.800Z DRAIN sidecars 2/2 acknowledged version 7
`
	if got := buf.String(); got != want {
		t.Errorf("lines:\n%s\nwant:\n%s", got, want)
	}
}

// TestEndWithoutRecord: a cutover that reaches its final step without a
// record of it still gets its final line and mark.
func TestEndWithoutRecord(t *testing.T) {
	script := doneScript("c-1")
	prev := script[5]
	cur := proto.Clone(script[6]).(*switchyardv1.Cutover)
	cur.History = cur.History[:len(cur.History)-1]
	want := []string{
		"04:15:04.000Z VERIFY done in 300ms: sidecars on target, copy complete",
		"04:15:04.000Z DONE in 2.0s; block window 1.3s",
	}
	if got := changeLines(prev, cur); !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if got := changeLines(cur, cur); len(got) != 0 {
		t.Errorf("no change, lines %q", got)
	}
	cur.Step, cur.Error = stFailed, "verify: billing/billing-0 still on source"
	if got, want := changeLines(prev, cur), "04:15:04.000Z FAILED: verify: billing/billing-0 still on source"; len(got) != 2 || got[1] != want {
		t.Errorf("lines %q, want the last to be %q", got, want)
	}
	if f := renderFrame(cur, t0, frameOptions{}); !strings.Contains(f, "  ✓ VERIFY       300ms  sidecars on target, copy complete\n  ✗ FAILED\n") {
		t.Errorf("frame:\n%s", f)
	}
}

func TestFmtDur(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0ms"},
		{0, "0ms"},
		{420 * time.Millisecond, "420ms"},
		{2400 * time.Millisecond, "2.4s"},
		{59 * time.Second, "59.0s"},
		{185 * time.Second, "3m05s"},
		{62 * time.Minute, "1h02m"},
	}
	for _, tt := range tests {
		if got := fmtDur(tt.d); got != tt.want {
			t.Errorf("fmtDur(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestCodeName(t *testing.T) {
	for code, want := range map[uint32]string{0: "OK", 1: "CANCELLED", 9: "FAILED_PRECONDITION", 16: "UNAUTHENTICATED", 99: "Code(99)"} {
		if got := codeName(codes.Code(code)); got != want {
			t.Errorf("codeName(%d) = %q, want %q", code, got, want)
		}
	}
}

// TestRenderFrameTwoPhase: a cutover whose coverage has producers and
// group applications shows the steps of both phases to come, and the
// groups' quiesce.
func TestRenderFrameTwoPhase(t *testing.T) {
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }
	c := &switchyardv1.Cutover{Id: "c-7", Step: switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, Created: ts(0),
		Spec: &switchyardv1.CutoverSpec{Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders", "billing"}}, Source: "s", Target: "t",
			Policy: &switchyardv1.CutoverPolicy{GateMode: "HOLD"}},
		Coverage: &switchyardv1.CutoverCoverage{Units: []*switchyardv1.CutoverUnit{
			{Id: "u1", Apps: []string{"orders"}, Phase: 1, Role: "producer"}, {Id: "u2", Apps: []string{"billing"}, Phase: 2, Role: "consumer"}}},
		GatedAt: ts(100 * time.Millisecond), ReleasedAt: ts(400 * time.Millisecond), GroupsQuiescedAt: ts(time.Second),
		BlockWindow: durationpb.New(300 * time.Millisecond)}
	for i, s := range []switchyardv1.CutoverStep{stPreflight, switchyardv1.CutoverStep_CUTOVER_STEP_GATE, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN,
		switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE} {
		r := &switchyardv1.StepRecord{Step: s, Started: ts(time.Duration(i) * 100 * time.Millisecond)}
		if s != switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE {
			r.Finished = ts(time.Duration(i+1) * 100 * time.Millisecond)
		}
		c.History = append(c.History, r)
	}
	got := renderFrame(c, t0.Add(1500*time.Millisecond), frameOptions{})
	for _, want := range []string{
		"  ✓ RELEASE", "  ✓ GROUP_DRAIN", "  ▶ QUIESCE",
		"  · SYNC_GROUPS\n  · GROUP_FLIP\n  · GROUP_RELEASE\n  · VERIFY\n  · DONE\n",
		"block window         300ms", "groups quiesced for  500ms",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("frame lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "· FLIP") || strings.Contains(got, "· RELEASE") {
		t.Errorf("frame shows the producers' steps to come again:\n%s", got)
	}
}

// TestPathOfGroupsOnly: a cutover whose only application has a group has
// no producer phase; its frame shows the groups' steps alone.
func TestPathOfGroupsOnly(t *testing.T) {
	c := &switchyardv1.Cutover{Spec: &switchyardv1.CutoverSpec{Selector: &switchyardv1.SidecarSelector{Apps: []string{"copy"}}},
		Coverage: &switchyardv1.CutoverCoverage{Units: []*switchyardv1.CutoverUnit{{Id: "u1", Apps: []string{"copy"}, Phase: 2, Role: "pipeline"}}}}
	var got []string
	for _, s := range pathOf(c) {
		got = append(got, stepName(s))
	}
	if want := "PREFLIGHT GROUP_DRAIN QUIESCE SYNC_GROUPS GROUP_FLIP GROUP_RELEASE VERIFY DONE"; strings.Join(got, " ") != want {
		t.Errorf("path %v, want %s", got, want)
	}
}
