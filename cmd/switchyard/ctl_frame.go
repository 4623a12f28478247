package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
)

// How a cutover is shown: renderFrame draws the whole state (the live
// display on a terminal, and `cutover status`); changeLines says what
// changed between two states, one line per change (watch into a pipe or a
// log). Both are pure: state and clock in, text out.

// happyPath is the order a cutover's steps run in when nothing goes wrong.
var happyPath = []switchyardv1.CutoverStep{
	switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT,
	switchyardv1.CutoverStep_CUTOVER_STEP_GATE,
	switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN,
	switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS,
	switchyardv1.CutoverStep_CUTOVER_STEP_FLIP,
	switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE,
	switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
	switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
}

// twoPhasePath is the happy path of a cutover that moves its producers
// first and its applications with consumer groups after them
// (control.TwoPhase).
var twoPhasePath = []switchyardv1.CutoverStep{
	switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT,
	switchyardv1.CutoverStep_CUTOVER_STEP_GATE,
	switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN,
	switchyardv1.CutoverStep_CUTOVER_STEP_FLIP,
	switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE,
	switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN,
	switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE,
	switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS,
	switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
	switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE,
	switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
	switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
}

// pathOf is the happy path of c: a cutover with only applications with
// groups skips the producers' steps (control.HasProducerPhase).
func pathOf(c *switchyardv1.Cutover) []switchyardv1.CutoverStep {
	switch {
	case !control.TwoPhase(c):
		return happyPath
	case !control.HasProducerPhase(c):
		return groupsOnlyPath
	}
	return twoPhasePath
}

// groupsOnlyPath is the happy path of a cutover whose every application
// has a consumer group: twoPhasePath without the producers' steps.
var groupsOnlyPath = slices.DeleteFunc(slices.Clone(twoPhasePath), func(s switchyardv1.CutoverStep) bool {
	switch s {
	case switchyardv1.CutoverStep_CUTOVER_STEP_GATE, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN,
		switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE:
		return true
	}
	return false
})

// ended reports whether s is a final step: DONE, ROLLED_BACK or FAILED.
func ended(s switchyardv1.CutoverStep) bool {
	switch s {
	case switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
		switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK,
		switchyardv1.CutoverStep_CUTOVER_STEP_FAILED:
		return true
	}
	return false
}

// stepName is the step as the API's enum names it, without the prefix:
// "SYNC_GROUPS".
func stepName(s switchyardv1.CutoverStep) string {
	return strings.TrimPrefix(s.String(), "CUTOVER_STEP_")
}

// frameOptions adjust renderFrame.
type frameOptions struct {
	// maxSidecars bounds the sidecar rows (those still waiting first) so a
	// live frame fits a screen; 0 shows all.
	maxSidecars int
	// note is a line shown under the frame, e.g. a lost connection.
	note string
}

// renderFrame draws the cutover as of now: the header, every step with its
// mark (✓ done, ✗ failed, ▶ running, · to come) and duration, the selected
// sidecars' acknowledgements, the mirror's lag, the block window and the
// error. Lines end with "\n" and carry no trailing blanks or tabs.
func renderFrame(c *switchyardv1.Cutover, now time.Time, o frameOptions) string {
	var b strings.Builder
	spec := c.GetSpec()
	step := c.GetStep()

	head := fmt.Sprintf("cutover %s  %s", c.GetId(), stepName(step))
	if d := elapsed(c, now); d > 0 {
		head += "  " + fmtDur(d)
	}
	if c.GetAbortRequested() && !ended(step) {
		head += "  (abort requested)"
	}
	fmt.Fprintln(&b, head)
	route := fmt.Sprintf("  %s  %s → %s  gate %s", selectorString(spec.GetSelector()), spec.GetSource(), spec.GetTarget(), gateMode(spec))
	if m := spec.GetMirror(); m != "" {
		route += "  mirror " + m
	}
	fmt.Fprintln(&b, route)
	fmt.Fprintln(&b)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	hist := c.GetHistory()
	seen := map[switchyardv1.CutoverStep]bool{}
	for i, r := range hist {
		seen[r.GetStep()] = true
		var next *switchyardv1.StepRecord
		if i+1 < len(hist) {
			next = hist[i+1]
		}
		mark, dur, text := stepRow(r, next, step, now)
		fmt.Fprintf(tw, "  %s %s\t%s\t%s\n", mark, stepName(r.GetStep()), dur, oneLine(text))
	}
	if step != switchyardv1.CutoverStep_CUTOVER_STEP_UNSPECIFIED && !seen[step] {
		// A state with no record of its current step (yet).
		mark := "▶"
		switch {
		case step == switchyardv1.CutoverStep_CUTOVER_STEP_DONE:
			mark = "✓"
		case ended(step):
			mark = "✗"
		}
		fmt.Fprintf(tw, "  %s %s\t\t\n", mark, stepName(step))
		seen[step] = true
	}
	path := pathOf(c)
	if cur := pathIndex(path, step); cur >= 0 && !ended(step) {
		for _, s := range path[cur+1:] {
			if !seen[s] {
				fmt.Fprintf(tw, "  · %s\t\t\n", stepName(s))
			}
		}
	}
	_ = tw.Flush()

	if acks := c.GetSidecars(); len(acks) > 0 {
		fmt.Fprintln(&b)
		writeAcks(&b, acks, o.maxSidecars)
	}

	fmt.Fprintln(&b)
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  mirror lag\t%d records\n", c.GetMirrorLag())
	switch {
	case c.GetReleasedAt() != nil:
		fmt.Fprintf(tw, "  block window\t%s (gated %s, released %s)\n", blockWindowString(c),
			fmtTime(c.GetGatedAt(), clockLayout), fmtTime(c.GetReleasedAt(), clockLayout))
	case c.GetGatedAt() != nil && !ended(step):
		fmt.Fprintf(tw, "  gated for\t%s (since %s)\n", fmtDur(now.Sub(c.GetGatedAt().AsTime())), fmtTime(c.GetGatedAt(), clockLayout))
	}
	switch {
	case c.GetGroupsReleasedAt() != nil:
		fmt.Fprintf(tw, "  group block window\t%s (quiesced %s, released %s)\n", fmtDur(c.GetGroupBlockWindow().AsDuration()),
			fmtTime(c.GetGroupsQuiescedAt(), clockLayout), fmtTime(c.GetGroupsReleasedAt(), clockLayout))
	case c.GetGroupsQuiescedAt() != nil && !ended(step):
		fmt.Fprintf(tw, "  groups quiesced for\t%s (since %s)\n", fmtDur(now.Sub(c.GetGroupsQuiescedAt().AsTime())), fmtTime(c.GetGroupsQuiescedAt(), clockLayout))
	}
	if offs := c.GetGroupOffsets(); len(offs) > 0 {
		fmt.Fprintf(tw, "  group offsets\t%s\n", outcomeSummary(offs))
	}
	if e := c.GetError(); e != "" {
		fmt.Fprintf(tw, "  error\t%s\n", oneLine(e))
	}
	_ = tw.Flush()
	if o.note != "" {
		fmt.Fprintf(&b, "\n  ! %s\n", oneLine(o.note))
	}
	return trimLines(b.String())
}

// stepRow returns the mark, duration and text of one step record; next is
// the record after it (nil for the last), current the cutover's step.
func stepRow(r, next *switchyardv1.StepRecord, current switchyardv1.CutoverStep, now time.Time) (mark, dur, text string) {
	text = r.GetDetail()
	if e := r.GetError(); e != "" {
		text = e
	}
	switch s := r.GetStep(); {
	case ended(s):
		mark = "✓"
		if s != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
			mark = "✗"
		}
		return mark, "", text
	case r.GetError() != "":
		mark = "✗"
	case r.GetFinished() == nil && next == nil && s == current:
		return "▶", fmtDur(now.Sub(r.GetStarted().AsTime())), text
	default:
		mark = "✓"
	}
	end := r.GetFinished()
	if end == nil && next != nil {
		end = next.GetStarted()
	}
	if end != nil && r.GetStarted() != nil {
		dur = fmtDur(end.AsTime().Sub(r.GetStarted().AsTime()))
	}
	return mark, dur, text
}

// writeAcks writes the sidecars' acknowledgements: a count, then one row
// each, those still waiting or failing first, at most limit rows (0: all).
func writeAcks(b *strings.Builder, acks []*switchyardv1.SidecarAck, limit int) {
	rows := append([]*switchyardv1.SidecarAck(nil), acks...)
	sort.SliceStable(rows, func(i, j int) bool { return !acked(rows[i]) && acked(rows[j]) })
	n := 0
	for _, a := range rows {
		if acked(a) {
			n++
		}
	}
	fmt.Fprintf(b, "  sidecars  %d/%d applied\n", n, len(rows))
	shown := rows
	if limit > 0 && len(rows) > limit {
		shown = rows[:limit]
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	for _, a := range shown {
		conn := "connected"
		if !a.GetConnected() {
			conn = "disconnected"
		}
		state := "✓"
		switch {
		case a.GetApplyError() != "":
			state = "apply error: " + oneLine(a.GetApplyError())
		case !acked(a):
			state = "waiting"
		}
		fmt.Fprintf(tw, "    %s/%s\t%s\tapplied %d/%d\t%s\n", a.GetApp(), a.GetInstance(), conn, a.GetAppliedVersion(), a.GetWantVersion(), state)
	}
	_ = tw.Flush()
	if hidden := rows[len(shown):]; len(hidden) > 0 {
		n := 0
		for _, a := range hidden {
			if acked(a) {
				n++
			}
		}
		fmt.Fprintf(b, "    … and %d more (%d applied)\n", len(hidden), n)
	}
}

// acked reports whether a sidecar has applied the version its step waits
// for.
func acked(a *switchyardv1.SidecarAck) bool {
	return a.GetApplyError() == "" && a.GetAppliedVersion() >= a.GetWantVersion()
}

// changeLines returns one line per change from prev to cur (prev nil: the
// first state seen, every step so far is news): steps starting and
// finishing, acknowledgement progress, sidecars disconnecting or failing
// to apply, an abort asked for, the release and the error. Lines carry the
// control plane's timestamps, not the reader's clock.
func changeLines(prev, cur *switchyardv1.Cutover) []string {
	var out []string
	add := func(ts *timestamppb.Timestamp, format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		if ts != nil {
			line = fmtTime(ts, clockLayout) + " " + line
		}
		out = append(out, line)
	}
	if prev == nil {
		spec := cur.GetSpec()
		line := fmt.Sprintf("cutover %s: %s from %s to %s, gate %s", cur.GetId(), selectorString(spec.GetSelector()),
			spec.GetSource(), spec.GetTarget(), gateMode(spec))
		if m := spec.GetMirror(); m != "" {
			line += ", mirror " + m
		}
		out = append(out, line)
	}
	prevHist := prev.GetHistory()
	for i, r := range cur.GetHistory() {
		var p *switchyardv1.StepRecord
		if i < len(prevHist) {
			p = prevHist[i]
		}
		s := r.GetStep()
		if ended(s) {
			if p == nil {
				add(r.GetStarted(), "%s", endLine(cur, r))
			}
			continue
		}
		if p == nil {
			add(r.GetStarted(), "%s started", stepName(s))
		}
		if r.GetFinished() != nil && p.GetFinished() == nil {
			d := fmtDur(r.GetFinished().AsTime().Sub(r.GetStarted().AsTime()))
			if e := r.GetError(); e != "" {
				add(r.GetFinished(), "%s failed after %s: %s", stepName(s), d, oneLine(e))
			} else if detail := r.GetDetail(); detail != "" {
				add(r.GetFinished(), "%s done in %s: %s", stepName(s), d, oneLine(detail))
			} else {
				add(r.GetFinished(), "%s done in %s", stepName(s), d)
			}
		}
	}
	if ended(cur.GetStep()) {
		if !hasStep(cur.GetHistory(), cur.GetStep()) && prev.GetStep() != cur.GetStep() {
			// Ended with no record of the final step.
			add(cur.GetUpdated(), "%s", endLine(cur, nil))
		}
		return out
	}
	step := stepName(cur.GetStep())
	at := cur.GetUpdated()

	prevAcks := map[string]*switchyardv1.SidecarAck{}
	for _, a := range prev.GetSidecars() {
		prevAcks[a.GetApp()+"/"+a.GetInstance()] = a
	}
	for _, a := range cur.GetSidecars() {
		name := a.GetApp() + "/" + a.GetInstance()
		p, known := prevAcks[name]
		wasConnected := !known || p.GetConnected()
		switch {
		case !a.GetConnected() && wasConnected:
			add(at, "%s sidecar %s disconnected", step, name)
		case a.GetConnected() && !wasConnected:
			add(at, "%s sidecar %s connected", step, name)
		}
		if e := a.GetApplyError(); e != "" && e != p.GetApplyError() {
			add(at, "%s sidecar %s: apply error: %s", step, name, oneLine(e))
		}
	}
	// Acknowledgements of a version the step waits for. When the step
	// changed but the version did not, they are the last step's, whose
	// "done" line said so; in the first state, only a step still waiting
	// is news.
	k, pk := ackKeyOf(cur), ackKeyOf(prev)
	stale := prev == nil && k.applied == k.total ||
		prev != nil && prev.GetStep() != cur.GetStep() && k.want == pk.want
	if k.want > 0 && k.applied > 0 && k != pk && !stale {
		line := fmt.Sprintf("%s sidecars %d/%d acknowledged", step, k.applied, k.total)
		if k.sameWant {
			line += fmt.Sprintf(" version %d", k.want)
		}
		add(at, "%s", line)
	}
	if cur.GetAbortRequested() && !prev.GetAbortRequested() {
		add(at, "%s abort requested", step)
	}
	if cur.GetReleasedAt() != nil && prev.GetReleasedAt() == nil {
		add(cur.GetReleasedAt(), "gates released: block window %s", blockWindowString(cur))
	}
	if cur.GetGroupsReleasedAt() != nil && prev.GetGroupsReleasedAt() == nil {
		add(cur.GetGroupsReleasedAt(), "groups released: block window %s", fmtDur(cur.GetGroupBlockWindow().AsDuration()))
	}
	if e := cur.GetError(); e != "" && e != prev.GetError() {
		add(at, "%s error: %s", step, oneLine(e))
	}
	return out
}

// endLine is the line that says how the cutover ended; r is the record of
// its final step, if there is one.
func endLine(cur *switchyardv1.Cutover, r *switchyardv1.StepRecord) string {
	s := cur.GetStep()
	if r != nil {
		s = r.GetStep()
	}
	if s == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		line := "DONE"
		if d := elapsed(cur, time.Time{}); d > 0 {
			line += " in " + fmtDur(d)
		}
		if cur.GetReleasedAt() != nil {
			line += "; block window " + blockWindowString(cur)
		}
		return line
	}
	e := r.GetError()
	if e == "" {
		e = cur.GetError()
	}
	if e == "" {
		e = r.GetDetail()
	}
	if e == "" {
		return stepName(s)
	}
	return stepName(s) + ": " + oneLine(e)
}

func hasStep(hist []*switchyardv1.StepRecord, s switchyardv1.CutoverStep) bool {
	for _, r := range hist {
		if r.GetStep() == s {
			return true
		}
	}
	return false
}

// ackKey is what the acknowledgement line reports; a new line is printed
// when it changes.
type ackKey struct {
	applied, total int
	want           uint64 // the highest version waited for
	sameWant       bool   // every sidecar waits for that version
}

func ackKeyOf(c *switchyardv1.Cutover) ackKey {
	k := ackKey{sameWant: true}
	for i, a := range c.GetSidecars() {
		k.total++
		if acked(a) {
			k.applied++
		}
		if i > 0 && a.GetWantVersion() != k.want {
			k.sameWant = false
		}
		k.want = max(k.want, a.GetWantVersion())
	}
	return k
}

// pathIndex is s's position on path, -1 when it is off it.
func pathIndex(path []switchyardv1.CutoverStep, s switchyardv1.CutoverStep) int {
	for i, p := range path {
		if p == s {
			return i
		}
	}
	return -1
}

// elapsed is the cutover's age: from its creation to now, or to its last
// change once it has ended. now zero: to its last change.
func elapsed(c *switchyardv1.Cutover, now time.Time) time.Duration {
	if c.GetCreated() == nil {
		return 0
	}
	end := now
	if ended(c.GetStep()) || now.IsZero() {
		if c.GetUpdated() == nil {
			return 0
		}
		end = c.GetUpdated().AsTime()
	}
	return max(end.Sub(c.GetCreated().AsTime()), 0)
}

// blockWindowString is how long the gates held producers: block_window,
// else released_at - gated_at; "-" before the release.
func blockWindowString(c *switchyardv1.Cutover) string {
	if d := c.GetBlockWindow(); d != nil {
		return fmtDur(d.AsDuration())
	}
	if c.GetGatedAt() != nil && c.GetReleasedAt() != nil {
		return fmtDur(c.GetReleasedAt().AsTime().Sub(c.GetGatedAt().AsTime()))
	}
	return "-"
}

// selectorString is "orders,billing" or "orders (role=producer)".
func selectorString(s *switchyardv1.SidecarSelector) string {
	out := strings.Join(s.GetApps(), ",")
	if len(s.GetLabels()) > 0 {
		out += " (" + labelFlag(s.GetLabels()).String() + ")"
	}
	return out
}

// gateMode is the spec's gate mode, with the API's default.
func gateMode(spec *switchyardv1.CutoverSpec) string {
	if m := spec.GetPolicy().GetGateMode(); m != "" {
		return m
	}
	return "HOLD"
}

// outcomeSummary counts group offsets by outcome: "2 committed, 1 unchanged".
func outcomeSummary(offs []*switchyardv1.GroupOffset) string {
	counts := map[string]int{}
	var order []string
	for _, o := range offs {
		k := o.GetOutcome()
		if k == "" {
			k = "unknown"
		}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	return strings.Join(parts, ", ")
}

// clockLayout shows a time of day, in UTC like every time ctl prints.
const clockLayout = "15:04:05.000Z"

// fmtTime formats t in UTC, "-" when it is absent.
func fmtTime(t *timestamppb.Timestamp, layout string) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(layout)
}

// fmtDur is a duration as people read it: 420ms, 2.4s, 3m05s, 1h02m.
func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a message from breaking a table or a frame.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// trimLines removes the blanks tabwriter pads empty trailing cells with.
func trimLines(s string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		nl := strings.HasSuffix(l, "\n")
		l = strings.TrimRight(l, " \t\n")
		if nl {
			l += "\n"
		}
		lines[i] = l
	}
	return strings.Join(lines, "")
}
