//go:build unix

package crashtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/internal/buildtest"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/offsetmap"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/mirror/verify"
)

var (
	flagSeed  = flag.Uint64("crashtest.seed", 0, "seed of the kill schedule and the workload; 0 picks one (it is logged)")
	flagKills = flag.Int("crashtest.kills", 30, "how many times the mirror is killed with SIGKILL (the proof needs at least 20)")
	flagBin   = flag.String("crashtest.bin", "", "switchyard binary to kill; empty builds ./cmd/switchyard of this module")
)

const (
	partitions     = 4
	backlogRecords = 15_000
	txnMaxRecords  = 100
	txnMaxInterval = 50 * time.Millisecond

	// Kill plans. A "startup" kill lands at a log-uniform time after the
	// process starts, so early (connecting, fencing the previous instance
	// and settling its transaction, restore, topic sync) and later moments
	// are all hit. A "copying" kill waits until the run has committed a
	// copy transaction, then lands at a uniform time within
	// copyingKillMax: mid-transaction or between transactions, in
	// proportion to the time the mirror spends in each. A "midtxn" kill
	// waits, after a first commit, until a transaction is seen open on the
	// target (records written, not committed) and kills at once.
	startupShare   = 0.35
	copyingShare   = 0.40
	startupKillMin = 2 * time.Millisecond
	startupKillMax = 1500 * time.Millisecond
	copyingKillMax = 1200 * time.Millisecond
	openTxnWait    = 10 * time.Second
	openTxnPoll    = 2 * time.Millisecond
	statusPoll     = 20 * time.Millisecond // a run's /v1/status, for its first commit

	// On kfake a target transaction lasts about a millisecond; its
	// EndTxn is delayed by up to this much (as a real broker's would
	// take), so kills can land between the last write and the commit.
	kfakeEndTxnDelayMax = 20 * time.Millisecond

	// Timeouts of the conditions the test waits for.
	firstCommitTimeout = 60 * time.Second
	catchUpTimeout     = 120 * time.Second
	exitTimeout        = 15 * time.Second
	progressTimeout    = 20 * time.Second
)

// checkpointTopicPrefix: the mirror keeps its offset map on the target in
// topic __switchyard_mirror_<name> (documented in `switchyard mirror
// --help`).
const checkpointTopicPrefix = "__switchyard_mirror_"

// TestMirrorSurvivesKill9 kills `switchyard mirror` at least 20 times at
// random points of a copy, then counts and compares every record. See the
// package documentation.
func TestMirrorSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds switchyard and kills the mirror 20+ times; skipped with -short")
	}
	began := time.Now()
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	kills := *flagKills
	t.Logf("backend %s, seed %d, %d kills (replay the schedule: go test ./mirror/crashtest -run TestMirrorSurvivesKill9 -v -args -crashtest.seed=%d)",
		kafkatest.Backend(), seed, kills, seed)
	if kills < 20 {
		t.Logf("warning: -crashtest.kills=%d is below the 20 kills the crash-safety proof asks for", kills)
	}
	rng := rand.New(rand.NewPCG(seed, 1))

	bin := buildSwitchyard(t)
	built := time.Now()

	source, target := kafkatest.Pair(t)
	slowFakeEndTxn(target)
	tgtAdm := kadm.NewClient(target.Client(t))
	topic := kafkatest.Topic(t, "crash")
	name := kafkatest.Topic(t, "crashtest")
	source.CreateTopic(t, topic, partitions)
	cfgPath := writeConfig(t, name, topic, source, target)
	if kafkatest.Backend() == kafkatest.BackendReal {
		t.Cleanup(func() { deleteTopicsIfPassed(t, source, target, topic, name) })
	}
	var runs []*mirrorProc
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, r := range runs {
			t.Logf("---- mirror run %d (%v) output ----\n%s", r.n, r.plan, r.out.tail(64<<10))
		}
	})

	// The workload: a backlog first, so the first runs have a copy to be
	// killed in, then steady production while the mirror is killed.
	w := newWorkload(t, source, topic, partitions)
	{
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := w.backlog(ctx, rand.New(rand.NewPCG(seed, 4)), backlogRecords)
		cancel()
		if err != nil {
			t.Fatalf("produce the backlog to the source: %v", err)
		}
	}
	w.start(seed)

	// The kills.
	var (
		prev          = progress{}
		stats         = killStats{plans: map[string]int{}}
		killLoopBegan = time.Now()
	)
	for i := 1; i <= kills; i++ {
		pl := drawPlan(rng)
		r := startMirror(t, bin, cfgPath, i, pl)
		runs = append(runs, r)
		switch pl.kind {
		case "startup":
			r.sleepUnlessExited(pl.delay)
		case "copying":
			r.waitFirstCommit(t, firstCommitTimeout)
			r.sleepUnlessExited(pl.delay)
		case "midtxn":
			r.waitFirstCommit(t, firstCommitTimeout)
			if !r.waitOpenTransaction(t, tgtAdm, topic) {
				stats.midTxnNotSeen++
			}
		}
		r.kill(t)
		open := openTransaction(t, tgtAdm, topic)

		// What the run left committed: never less than before.
		cur, err := readProgress(target, name, topic)
		if err != nil {
			stats.unreadable++
			t.Errorf("run %d: after the kill, the committed offset maps cannot be read: %v\n%s", i, err, checkpointTail(target, name))
			continue
		}
		for _, p := range regressions(prev, cur) {
			t.Errorf("run %d: the committed offset map went backwards after the kill: %s", i, p)
		}
		// Whether the run committed is what its own status reported (it
		// is polled every statusPoll). The committed position is no measure of
		// that: a commit requested just before a kill completes after it
		// (the broker writes the markers) and shows in the next run's +N.
		committed := r.committed.Load()
		stats.note(pl, committed, open)
		t.Logf("run %2d: %-34v up %5dms: %-6s first commit, %-11s; committed source position %d (+%d)",
			i, pl, r.uptime.Milliseconds(), map[bool]string{true: "after", false: "before"}[committed],
			map[bool]string{true: "txn open", false: "no txn open"}[open], cur.sumNext(), cur.sumNext()-prev.sumNext())
		prev = cur
	}
	killLoopDone := time.Now()

	// Stop producing; wait until the source's transactions are settled.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := w.stop(ctx)
		cancel()
		if err != nil {
			t.Fatalf("producer: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	srcEnds := source.SettledEnds(ctx, t, topic)
	cancel()

	// One last run, to the end, stopped cleanly.
	final := startMirror(t, bin, cfgPath, kills+1, plan{kind: "final"})
	runs = append(runs, final)
	waitCopied(t, target, name, topic, srcEnds, final)
	final.terminate(t)
	caughtUp := time.Now()

	// Count and compare.
	ctx, cancel = context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	tgtEnds := target.SettledEnds(ctx, t, topic)
	src, err := readAll(ctx, source, topic, srcEnds)
	if err != nil {
		t.Fatalf("read the source: %v", err)
	}
	dst, err := readAll(ctx, target, topic, tgtEnds)
	if err != nil {
		t.Fatalf("read the target: %v", err)
	}
	read := time.Now()
	checkSource(t, w, src)
	compareCopy(t, w, src, dst)
	maps, err := readProgress(target, name, topic)
	if err != nil {
		t.Fatalf("read the committed offset maps after the last run: %v\n%s", err, checkpointTail(target, name))
	}
	for _, p := range regressions(prev, maps) {
		t.Errorf("last run: the committed offset map went backwards: %s", p)
	}
	for p := int32(0); p < partitions; p++ {
		end, _ := srcEnds.Lookup(topic, p)
		checkOffsetMap(t, p, maps[p], end.Offset, src[p], dst[p])
	}
	compared := time.Now()
	runVerify(ctx, t, source, target, name, topic, partitions, src)
	verified := time.Now()

	committed, aborted, txnsCommitted, txnsAborted := w.counts()
	copied := 0
	for _, rs := range dst {
		copied += len(rs)
	}
	stats.log(t, kills)
	t.Logf("records: %d committed on the source (%d transactions committed), %d aborted (%d transactions); %d copied to the target over %d partitions",
		committed, txnsCommitted, aborted, txnsAborted, copied, partitions)
	ms := func(from, to time.Time) time.Duration { return to.Sub(from).Round(time.Millisecond) }
	t.Logf("duration %v: build %v, backlog %v, kills %v, last run to caught up %v, read both sides %v, compare %v, verify %v",
		ms(began, verified), ms(began, built), ms(built, killLoopBegan), ms(killLoopBegan, killLoopDone),
		ms(killLoopDone, caughtUp), ms(caughtUp, read), ms(read, compared), ms(compared, verified))
}

// plan says when a run is killed.
type plan struct {
	kind  string        // "startup", "copying", "midtxn" or "final" (not killed)
	delay time.Duration // after the start ("startup") or the first commit ("copying")
}

func (p plan) String() string {
	switch p.kind {
	case "startup":
		return fmt.Sprintf("startup kill %dms after the start", p.delay.Milliseconds())
	case "copying":
		return fmt.Sprintf("copying kill %dms after a commit", p.delay.Milliseconds())
	case "midtxn":
		return "midtxn kill at an open transaction"
	}
	return p.kind
}

func drawPlan(rng *rand.Rand) plan {
	switch x := rng.Float64(); {
	case x < startupShare:
		lo, hi := math.Log(float64(startupKillMin)), math.Log(float64(startupKillMax))
		return plan{kind: "startup", delay: time.Duration(math.Exp(lo + rng.Float64()*(hi-lo)))}
	case x < startupShare+copyingShare:
		return plan{kind: "copying", delay: time.Duration(rng.Int64N(int64(copyingKillMax)))}
	default:
		return plan{kind: "midtxn"}
	}
}

// killStats counts where the kills landed.
type killStats struct {
	plans         map[string]int
	midTxnNotSeen int // "midtxn" plans that saw no open transaction in time
	unreadable    int // kills after which the offset maps could not be read
	// Where they landed: before the run's first commit (with a
	// transaction open on the target — the run's first, or its
	// predecessor's not yet settled — or not), after it with a
	// transaction open (mid-transaction) or not (between transactions).
	beforeCommit, beforeCommitOpen, midTxn, between int
}

func (s *killStats) note(pl plan, committed, open bool) {
	s.plans[pl.kind]++
	switch {
	case !committed && open:
		s.beforeCommitOpen++
	case !committed:
		s.beforeCommit++
	case open:
		s.midTxn++
	default:
		s.between++
	}
}

func (s *killStats) log(t *testing.T, kills int) {
	t.Helper()
	t.Logf("%d kills (planned: %d during startup, %d while copying, %d at an open transaction, of which %d saw none within %v)",
		kills, s.plans["startup"], s.plans["copying"], s.plans["midtxn"], s.midTxnNotSeen, openTxnWait)
	t.Logf("landed: %d before the run's first commit (%d of them with a transaction open on the target: the run's first, "+
		"or its predecessor's not yet settled), %d after it: %d mid-transaction (open on the target), %d between transactions; "+
		"offset maps unreadable after %d kills",
		s.beforeCommit+s.beforeCommitOpen, s.beforeCommitOpen, s.midTxn+s.between, s.midTxn, s.between, s.unreadable)
}

// slowFakeEndTxn delays every EndTxn on a kfake target by a random time up
// to kfakeEndTxnDelayMax, without blocking the cluster's other
// connections. Nothing on real Kafka.
func slowFakeEndTxn(target *kafkatest.Cluster) {
	c := target.Fake
	if c == nil {
		return
	}
	c.ControlKey(kmsg.EndTxn.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		d := rand.N(kfakeEndTxnDelayMax)
		c.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false // then handled as usual
	})
}

// buildSwitchyard builds the switchyard binary from this module, unless
// -crashtest.bin names one.
func buildSwitchyard(t *testing.T) string { return buildtest.Switchyard(t, *flagBin) }

// writeConfig writes the mirror's configuration file: small transactions,
// so that a run commits many and a kill has many places to land. edit, if
// given, changes the configuration before it is validated and written.
func writeConfig(t *testing.T, name, topic string, source, target *kafkatest.Cluster, edit ...func(*mirror.Config)) string {
	t.Helper()
	cfg := mirror.DefaultConfig()
	cfg.Name = name
	cfg.SourceBootstrap, cfg.TargetBootstrap = source.Bootstrap, target.Bootstrap
	cfg.Topics = topics.Policy{Include: []string{regexp.QuoteMeta(topic)}}
	cfg.TxnMaxRecords = txnMaxRecords
	cfg.TxnMaxInterval = txnMaxInterval
	cfg.RetryBackoff = 50 * time.Millisecond
	cfg.RetryBackoffMax = time.Second
	for _, f := range edit {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("mirror config: %v", err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("mirror config: %v", err)
	}
	path := filepath.Join(t.TempDir(), "mirror.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("write mirror config: %v", err)
	}
	return path
}

// mirrorProc is one run of `switchyard mirror`.
type mirrorProc struct {
	n       int
	plan    plan
	cmd     *exec.Cmd
	out     *runLog
	started time.Time
	uptime  time.Duration // until the kill

	exited  chan struct{} // closed once Wait returned
	waitErr error         // Wait's result, set before exited is closed

	// The status poller: committed turns true (and firstCommit is
	// closed) once /v1/status shows a copy transaction committed.
	committed   atomic.Bool
	firstCommit chan struct{}
	stopPoll    context.CancelFunc
	pollDone    chan struct{}
}

func startMirror(t *testing.T, bin, cfgPath string, n int, pl plan) *mirrorProc {
	t.Helper()
	r := &mirrorProc{n: n, plan: pl, out: newRunLog(), exited: make(chan struct{}),
		firstCommit: make(chan struct{}), pollDone: make(chan struct{})}
	// Port 0: the status server takes a free port and logs it.
	r.cmd = exec.Command(bin, "mirror", "--config", cfgPath, "--http", "127.0.0.1:0", "--log-format", "json", "--log-level", "info")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("run %d: start %s: %v", n, bin, err)
	}
	r.started = time.Now()
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	r.stopPoll = cancel
	go r.poll(ctx)
	t.Cleanup(r.ensureStopped)
	return r
}

// ensureStopped kills the process if it still runs and stops the poller.
func (r *mirrorProc) ensureStopped() {
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.stopPoll()
	<-r.pollDone
}

// pauseUnlessExited waits d, or less if one of the runs exits: it returns
// that run then, nil otherwise.
func pauseUnlessExited(d time.Duration, rs ...*mirrorProc) *mirrorProc {
	timer := time.NewTimer(d)
	defer timer.Stop()
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)}}
	for _, r := range rs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(r.exited)})
	}
	if i, _, _ := reflect.Select(cases); i > 0 {
		return rs[i-1]
	}
	return nil
}

// sleepUnlessExited waits d, or less if the process exits (kill then
// reports it).
func (r *mirrorProc) sleepUnlessExited(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-r.exited:
	}
}

// waitFirstCommit waits until the run has committed a copy transaction.
func (r *mirrorProc) waitFirstCommit(t *testing.T, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-r.firstCommit:
	case <-r.exited:
		t.Fatalf("run %d: the mirror exited by itself before its first commit: %v", r.n, r.waitErr)
	case <-timer.C:
		t.Fatalf("run %d: no copy transaction committed within %v (status: %s)", r.n, timeout, r.status())
	}
}

// waitOpenTransaction waits until a transaction is open on the target
// topic (or openTxnWait passes: it reports false then).
func (r *mirrorProc) waitOpenTransaction(t *testing.T, adm *kadm.Client, topic string) bool {
	t.Helper()
	deadline := time.Now().Add(openTxnWait)
	tick := time.NewTicker(openTxnPoll)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if openTransaction(t, adm, topic) {
			return true
		}
		select {
		case <-r.exited:
			return false // kill reports it
		case <-tick.C:
		}
	}
	return false
}

// kill sends SIGKILL and waits for the process; it must not have exited
// by itself before.
func (r *mirrorProc) kill(t *testing.T) {
	t.Helper()
	r.uptime = time.Since(r.started)
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("run %d: kill: %v", r.n, err)
	}
	r.awaitExit(t)
	r.stopPoll()
	<-r.pollDone
	var ee *exec.ExitError
	if !errors.As(r.waitErr, &ee) || !signaled(ee, syscall.SIGKILL) {
		t.Fatalf("run %d: the mirror exited by itself before it was killed: %v", r.n, r.waitErr)
	}
}

// terminate sends SIGTERM and expects a clean exit (status 0).
func (r *mirrorProc) terminate(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			<-r.exited
			t.Fatalf("run %d: the mirror exited by itself before SIGTERM: %v", r.n, r.waitErr)
		}
		t.Fatalf("run %d: SIGTERM: %v", r.n, err)
	}
	r.awaitExit(t)
	r.stopPoll()
	<-r.pollDone
	if r.waitErr != nil {
		t.Errorf("run %d: after SIGTERM the mirror exited with %v, want status 0", r.n, r.waitErr)
	}
}

func (r *mirrorProc) awaitExit(t *testing.T) {
	t.Helper()
	timer := time.NewTimer(exitTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
	case <-timer.C:
		_ = r.cmd.Process.Kill()
		<-r.exited
		t.Fatalf("run %d: the mirror had not exited %v after the signal", r.n, exitTimeout)
	}
}

func signaled(ee *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

var statusClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// poll watches /v1/status until the run commits, is killed or stopped.
func (r *mirrorProc) poll(ctx context.Context) {
	defer close(r.pollDone)
	select {
	case <-r.out.addrFound:
	case <-ctx.Done():
		return
	case <-r.exited:
		return
	}
	tick := time.NewTicker(statusPoll)
	defer tick.Stop()
	for {
		var st mirror.Status
		if raw, err := r.fetchStatus(ctx); err == nil && json.Unmarshal(raw, &st) == nil {
			for _, p := range st.Partitions {
				if !p.LastCommit.IsZero() {
					r.committed.Store(true)
					close(r.firstCommit)
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.exited:
			return
		case <-tick.C:
		}
	}
}

func (r *mirrorProc) fetchStatus(ctx context.Context) ([]byte, error) {
	addr := r.out.addr()
	if addr == "" {
		return nil, errors.New("status address not logged yet")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s", resp.Status)
	}
	return b, nil
}

// status returns the run's /v1/status for a failure message.
func (r *mirrorProc) status() string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := r.fetchStatus(ctx)
	if err != nil {
		return "unavailable: " + err.Error()
	}
	return string(bytes.TrimSpace(b))
}

// runLog collects a run's output and finds the status server's address
// in the "mirror starting" log line.
type runLog struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	httpAddr  string
	addrFound chan struct{}
}

var httpField = regexp.MustCompile(`"msg":"mirror starting".*"http":"([^"]+)"`)

func newRunLog() *runLog { return &runLog{addrFound: make(chan struct{})} }

func (l *runLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.httpAddr == "" {
		if m := httpField.FindSubmatch(l.buf.Bytes()); m != nil {
			l.httpAddr = string(m[1])
			close(l.addrFound)
		}
	}
	return len(p), nil
}

func (l *runLog) addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.httpAddr
}

func (l *runLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	if len(b) > n {
		return fmt.Sprintf("[%d bytes before]\n%s", len(b)-n, b[len(b)-n:])
	}
	return string(b)
}

// progress is the committed offset map of each source partition.
type progress map[int32]*offsetmap.Map

func (pr progress) sumNext() (n int64) {
	for _, m := range pr {
		n += m.Next()
	}
	return n
}

// readProgress reads the offset maps the mirror has committed on the
// target (mirror.ReadOffsetMaps). No checkpoint topic, or an empty one,
// means nothing committed yet.
func readProgress(target *kafkatest.Cluster, name, topic string) (progress, error) {
	ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(target.Bootstrap...))
	if err != nil {
		return nil, fmt.Errorf("target client: %w", err)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, checkpointTopicPrefix+name)
	cl.Close()
	if err != nil {
		return nil, fmt.Errorf("end of the checkpoint topic: %w", err)
	}
	if o, ok := ends.Lookup(checkpointTopicPrefix+name, 0); !ok || errors.Is(o.Err, kerr.UnknownTopicOrPartition) || o.Err == nil && o.Offset == 0 {
		return progress{}, nil
	} else if o.Err != nil {
		return nil, fmt.Errorf("end of the checkpoint topic: %w", o.Err)
	}
	maps, err := mirror.ReadOffsetMaps(ctx, target.Bootstrap, name)
	if err != nil {
		return nil, fmt.Errorf("mirror.ReadOffsetMaps: %w", err)
	}
	out := progress{}
	for k, m := range maps {
		if k.Topic != topic {
			return nil, fmt.Errorf("offset map of %s/%d: the mirror copies only %s", k.Topic, k.Partition, topic)
		}
		out[k.Partition] = m
	}
	return out, nil
}

// openTransaction reports whether a transaction is open on the target
// topic: its last stable offset, listed after its high watermark, is short
// of it on some partition. On real Kafka the markers of a transaction
// committed just before can also still be on their way; this only steers
// the "midtxn" kills and feeds the statistics.
func openTransaction(t *testing.T, adm *kadm.Client, topic string) bool {
	t.Helper()
	return len(openPartitions(t, adm, topic)) > 0
}

// openPartitions returns the partitions of the target topic on which a
// transaction is open, as openTransaction judges it (nil when the offsets
// cannot be listed).
func openPartitions(t *testing.T, adm *kadm.Client, topic string) map[int32]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Logf("open transaction on the target: %v", err)
		return nil
	}
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Logf("open transaction on the target: %v", err)
		return nil
	}
	open := map[int32]bool{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := lso.Lookup(o.Topic, o.Partition); ok && o.Err == nil && s.Err == nil && s.Offset < o.Offset {
			open[o.Partition] = true
		}
	})
	return open
}

// regressions lists how cur goes back on prev: a committed map may only
// grow — Next and TargetNext never decrease, and every range committed
// before is still there (the last one possibly extended).
func regressions(prev, cur progress) []string {
	var out []string
	for p, before := range prev {
		after := cur[p]
		if after == nil {
			out = append(out, fmt.Sprintf("partition %d: its map is gone", p))
			continue
		}
		if after.Next() < before.Next() || after.TargetNext() < before.TargetNext() || after.Start() != before.Start() {
			out = append(out, fmt.Sprintf("partition %d: [%d, %d) → target %d became [%d, %d) → target %d", p,
				before.Start(), before.Next(), before.TargetNext(), after.Start(), after.Next(), after.TargetNext()))
			continue
		}
		br, ar := before.Ranges(), after.Ranges()
		if len(ar) < len(br) {
			out = append(out, fmt.Sprintf("partition %d: %d ranges became %d", p, len(br), len(ar)))
			continue
		}
		for i, b := range br {
			a := ar[i]
			if a.Src != b.Src || a.Tgt != b.Tgt || a.Len < b.Len || (i < len(br)-1 && a.Len != b.Len) {
				out = append(out, fmt.Sprintf("partition %d: range %d %+v became %+v", p, i, b, a))
				break
			}
		}
	}
	return out
}

// waitCopied waits until the committed offset maps reach the source's
// settled end offsets on every partition, while the runs rs copy (any of
// them exiting fails the test).
func waitCopied(t *testing.T, target *kafkatest.Cluster, name, topic string, ends kadm.ListedOffsets, rs ...*mirrorProc) {
	t.Helper()
	deadline := time.Now().Add(catchUpTimeout)
	behind := "no offset map read yet"
	for {
		pr, err := readProgress(target, name, topic)
		if err != nil {
			behind = err.Error()
		} else {
			behind = ""
			ends.Each(func(o kadm.ListedOffset) {
				if m := pr[o.Partition]; behind == "" && (m == nil || m.Next() < o.Offset) {
					next := int64(-1)
					if m != nil {
						next = m.Next()
					}
					behind = fmt.Sprintf("%s/%d committed up to %d of %d", topic, o.Partition, next, o.Offset)
				}
			})
			if behind == "" {
				return
			}
		}
		if time.Now().After(deadline) {
			var sts []string
			for _, r := range rs {
				sts = append(sts, fmt.Sprintf("run %d: %s", r.n, r.status()))
			}
			t.Fatalf("the mirror did not catch up within %v: %s (status of %s)", catchUpTimeout, behind, strings.Join(sts, "; "))
		}
		if r := pauseUnlessExited(200*time.Millisecond, rs...); r != nil {
			t.Fatalf("mirror run %d exited by itself before the copy caught up (%s): %v", r.n, behind, r.waitErr)
		}
	}
}

// runVerify runs mirror/verify over the mirrored topic: an independent
// reading and comparison of both sides through the committed offset map.
func runVerify(ctx context.Context, t *testing.T, source, target *kafkatest.Cluster, name, topic string, nparts int32, src map[int32][]rec) {
	t.Helper()
	cfg := verify.DefaultConfig()
	cfg.SourceBootstrap, cfg.TargetBootstrap = source.Bootstrap, target.Bootstrap
	cfg.Mirror = name
	cfg.Topics = regexp.QuoteMeta(topic)
	rep, err := verify.Run(ctx, cfg)
	if err != nil {
		t.Errorf("verify: %v", err)
		return
	}
	if len(rep.Partitions) != int(nparts) {
		t.Errorf("verify checked %d partitions, want %d", len(rep.Partitions), nparts)
	}
	for _, pr := range rep.Partitions {
		if pr.Status() != verify.StatusMatch {
			t.Errorf("verify %s/%d: %s", pr.Topic, pr.Partition, pr.Detail())
		}
		if want := int64(len(src[pr.Partition])); pr.SourceCount != want || pr.TargetCount != want || pr.Matched != want {
			t.Errorf("verify %s/%d: %d source records, %d target, %d matched; the test read %d", pr.Topic, pr.Partition,
				pr.SourceCount, pr.TargetCount, pr.Matched, want)
		}
	}
}

// checkpointTail describes the last records of the checkpoint topic,
// aborted ones and markers included, as evidence for a failure.
func checkpointTail(target *kafkatest.Cluster, name string) string {
	const n = 16
	topic := checkpointTopicPrefix + name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(target.Bootstrap...))
	if err != nil {
		return "checkpoint tail: " + err.Error()
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	lso, err2 := adm.ListCommittedOffsets(ctx, topic)
	cl.Close()
	if err = errors.Join(err, err2); err != nil {
		return "checkpoint tail: " + err.Error()
	}
	end, _ := ends.Lookup(topic, 0)
	stable, _ := lso.Lookup(topic, 0)
	from := max(0, end.Offset-n)
	rd, err := kgo.NewClient(kgo.SeedBrokers(target.Bootstrap...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords())
	if err != nil {
		return "checkpoint tail: " + err.Error()
	}
	defer rd.Close()
	var sb strings.Builder
	fmt.Fprintf(&sb, "checkpoint topic %s: high watermark %d, last stable offset %d; offsets %d on (read_uncommitted):\n", topic, end.Offset, stable.Offset, from)
	for next := from; next < end.Offset; {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			fmt.Fprintf(&sb, "  (stopped at %d: %v)\n", next, ctx.Err())
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			what := "data"
			switch {
			case r.Attrs.IsControl() && len(r.Key) >= 4 && binary.BigEndian.Uint16(r.Key[2:4]) == 0:
				what = "ABORT marker"
			case r.Attrs.IsControl():
				what = "COMMIT marker"
			case len(r.Key) > 0 && r.Key[0] == 's':
				what = "start marker"
			case len(r.Key) > 0 && r.Key[0] == 'd':
				what = "delta"
			}
			fmt.Fprintf(&sb, "  %6d  %-13s producer %d epoch %d transactional %v key %s\n",
				r.Offset, what, r.ProducerID, r.ProducerEpoch, r.Attrs.IsTransactional(), showBytes(r.Key))
		})
	}
	return sb.String()
}

// deleteTopicsIfPassed removes the test's topics from the shared real
// clusters when the test passed (they are kept for a post-mortem
// otherwise).
func deleteTopicsIfPassed(t *testing.T, source, target *kafkatest.Cluster, topic, name string) {
	if t.Failed() {
		t.Logf("kept topics %s (source and target) and %s%s (target) for a post-mortem", topic, checkpointTopicPrefix, name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for c, names := range map[*kafkatest.Cluster][]string{source: {topic}, target: {topic, checkpointTopicPrefix + name}} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap...))
		if err != nil {
			t.Logf("delete topics on %s: %v", c.Name, err)
			continue
		}
		if _, err := kadm.NewClient(cl).DeleteTopics(ctx, names...); err != nil {
			t.Logf("delete topics %v on %s: %v", names, c.Name, err)
		}
		cl.Close()
	}
}
