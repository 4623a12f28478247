package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

const (
	// watchReconnectFor is how long a watch keeps reconnecting to a
	// control plane that went away (UNAVAILABLE) since its last message.
	watchReconnectFor = time.Minute
	// termRedraw is how often the terminal display is redrawn between
	// states, so the running step's duration moves.
	termRedraw = 250 * time.Millisecond
	// termMaxSidecars bounds the sidecar rows of the live frame so it fits
	// a screen (the cursor cannot move above the screen's top to redraw).
	termMaxSidecars = 12
	// lagLineEvery throttles the mirror-lag lines of the line display.
	lagLineEvery = time.Second
)

// watch follows the cutover until it ends, showing every state, and
// returns nil when it is DONE and an error when it rolled back or failed,
// when the watch is interrupted (ctx) or the control plane cannot be
// reached for watchReconnectFor.
func (c *ctl) watch(ctx context.Context, id string) error {
	d := c.newDisplay()
	defer d.close()
	var last *switchyardv1.Cutover
	lastSeen := c.now()
	backoff := 200 * time.Millisecond
	noted := false // the display says the connection is lost
	for {
		err := c.watchStream(ctx, id, func(resp *switchyardv1.WatchCutoverResponse) error {
			last, lastSeen, backoff, noted = resp.GetCutover(), c.now(), 200*time.Millisecond, false
			return d.show(resp)
		})
		switch {
		case err == nil:
			return outcome(last)
		case ctx.Err() != nil:
			if last == nil {
				return fmt.Errorf("cutover watch %s: %w", id, ctx.Err())
			}
			return fmt.Errorf("stopped watching cutover %s in step %s; it goes on without this watch (switchyard ctl cutover watch %s)",
				id, stepName(last.GetStep()), id)
		case errors.Is(err, io.EOF):
			if last == nil {
				return fmt.Errorf("cutover watch %s: the control plane ended the stream without a state", id)
			}
			return fmt.Errorf("cutover watch %s: the control plane ended the stream in step %s, before the cutover ended",
				id, stepName(last.GetStep()))
		case status.Code(err) != codes.Unavailable || last == nil || c.now().Sub(lastSeen) > watchReconnectFor:
			return c.rpcErr("cutover watch", err)
		}
		if !noted {
			d.note(fmt.Sprintf("connection to %s lost (%s); reconnecting", c.flags.server, status.Convert(err).Message()))
			noted = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchStream opens one WatchCutover stream and hands every state to show
// until the cutover ends (nil) or the stream fails (its error; io.EOF when
// the server ended it first).
func (c *ctl) watchStream(ctx context.Context, id string, show func(*switchyardv1.WatchCutoverResponse) error) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.client.WatchCutover(sctx, &switchyardv1.WatchCutoverRequest{Id: id})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := show(resp); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if ended(resp.GetCutover().GetStep()) {
			return nil
		}
	}
}

// outcome is nil for a DONE cutover and an error (exit code 1) for one
// that rolled back or failed.
func outcome(cut *switchyardv1.Cutover) error {
	why := cut.GetError()
	if why == "" {
		why = "no reason given"
	}
	switch cut.GetStep() {
	case switchyardv1.CutoverStep_CUTOVER_STEP_DONE:
		return nil
	case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK:
		return fmt.Errorf("cutover %s rolled back: %s; the applications run on %s, as before",
			cut.GetId(), oneLine(why), cut.GetSpec().GetSource())
	case switchyardv1.CutoverStep_CUTOVER_STEP_FAILED:
		return fmt.Errorf("cutover %s FAILED after the point of no return: %s; it needs an operator", cut.GetId(), oneLine(why))
	default:
		return fmt.Errorf("cutover %s: watch ended in step %s", cut.GetId(), stepName(cut.GetStep()))
	}
}

// watchDisplay shows the states of a watched cutover. Its methods are
// called from one goroutine; close may be called more than once.
type watchDisplay interface {
	show(resp *switchyardv1.WatchCutoverResponse) error
	note(msg string)
	close()
}

// newDisplay picks the display: JSON lines with --output json, the live
// frame when stdout is a terminal, one line per change otherwise.
func (c *ctl) newDisplay() watchDisplay {
	if c.jsonOutput() {
		return &jsonDisplay{c: c}
	}
	if f, ok := terminalOf(c.stdout, c.getenv); ok {
		return newTermDisplay(f, c.now, func() int { return terminalWidth(f) })
	}
	return &lineDisplay{w: c.stdout, now: c.now}
}

// terminalOf returns w as a file when it is a character device (a
// terminal) and TERM is not "dumb".
func terminalOf(w io.Writer, getenv func(string) string) (*os.File, bool) {
	f, ok := w.(*os.File)
	if !ok || getenv("TERM") == "dumb" {
		return nil, false
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, false
	}
	return f, fi.Mode()&os.ModeCharDevice != 0
}

// jsonDisplay prints each state as one protojson object per line.
type jsonDisplay struct{ c *ctl }

func (d *jsonDisplay) show(resp *switchyardv1.WatchCutoverResponse) error { return d.c.printJSON(resp) }
func (d *jsonDisplay) note(msg string)                                    { fmt.Fprintln(d.c.stderr, msg) }
func (d *jsonDisplay) close()                                             {}

// lineDisplay prints one line per change, for pipes and logs.
type lineDisplay struct {
	w    io.Writer
	now  func() time.Time
	prev *switchyardv1.Cutover

	// The last mirror-lag line: in which step, which value, when.
	lagStep switchyardv1.CutoverStep
	lag     int64
	lagAt   time.Time
}

func (d *lineDisplay) show(resp *switchyardv1.WatchCutoverResponse) error {
	cur := resp.GetCutover()
	lines := changeLines(d.prev, cur)
	if l, ok := d.lagLine(cur); ok {
		lines = append(lines, l)
	}
	d.prev = cur
	if len(lines) == 0 {
		return nil
	}
	_, err := io.WriteString(d.w, strings.Join(lines, "\n")+"\n")
	return err
}

// lagLine reports the mirror's lag while it matters (PREFLIGHT, DRAIN):
// on entering the step, when it reaches zero, and otherwise at most once
// per lagLineEvery, so a busy mirror does not flood the log.
func (d *lineDisplay) lagLine(cur *switchyardv1.Cutover) (string, bool) {
	step, lag := cur.GetStep(), cur.GetMirrorLag()
	if step != switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT && step != switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN {
		return "", false
	}
	now := d.now()
	switch {
	case step != d.lagStep:
	case lag == d.lag:
		return "", false
	case lag != 0 && now.Sub(d.lagAt) < lagLineEvery:
		return "", false
	}
	d.lagStep, d.lag, d.lagAt = step, lag, now
	line := fmt.Sprintf("%s mirror lag %d records", stepName(step), lag)
	if cur.GetUpdated() != nil {
		line = fmtTime(cur.GetUpdated(), clockLayout) + " " + line
	}
	return line, true
}

func (d *lineDisplay) note(msg string) { fmt.Fprintln(d.w, msg) }
func (d *lineDisplay) close()          {}

// termDisplay redraws the frame in place on a terminal: on every state,
// and every termRedraw in between so durations move. Drawing is guarded by
// mu, shared by show and the redraw goroutine; close stops the goroutine.
type termDisplay struct {
	w     io.Writer
	now   func() time.Time
	width func() int    // columns; 0 when unknown
	every time.Duration // redraw interval between states

	mu    sync.Mutex
	cur   *switchyardv1.Cutover
	msg   string
	lines int // lines of the frame on screen, to move back over
	stop  chan struct{}
	done  chan struct{}
}

func newTermDisplay(w io.Writer, now func() time.Time, width func() int) *termDisplay {
	return &termDisplay{w: w, now: now, width: width, every: termRedraw}
}

func (d *termDisplay) show(resp *switchyardv1.WatchCutoverResponse) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur, d.msg = resp.GetCutover(), ""
	if d.stop == nil && !ended(d.cur.GetStep()) {
		d.stop, d.done = make(chan struct{}), make(chan struct{})
		go d.redrawLoop(d.every, d.stop, d.done)
	}
	return d.drawLocked()
}

func (d *termDisplay) note(msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msg = msg
	_ = d.drawLocked()
}

// close stops the redraw goroutine and leaves the last frame on screen.
func (d *termDisplay) close() {
	d.mu.Lock()
	stop, done := d.stop, d.done
	d.stop = nil
	d.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (d *termDisplay) redrawLoop(every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			d.mu.Lock()
			_ = d.drawLocked()
			d.mu.Unlock()
		}
	}
}

// drawLocked moves the cursor back to the top of the frame on screen,
// clears to the end of the screen and draws the current frame, each line
// cut to the terminal's width so none wraps (a wrapped line would throw
// the next move off).
func (d *termDisplay) drawLocked() error {
	if d.cur == nil {
		return nil
	}
	frame := renderFrame(d.cur, d.now(), frameOptions{maxSidecars: termMaxSidecars, note: d.msg})
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines)
	}
	b.WriteString("\r\x1b[J")
	lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
	width := d.width()
	for _, l := range lines {
		if width > 1 {
			l = truncateRunes(l, width-1)
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	d.lines = len(lines)
	_, err := io.WriteString(d.w, b.String())
	return err
}

// truncateRunes cuts s to n runes, the last one an ellipsis.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
