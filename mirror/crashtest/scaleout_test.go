//go:build unix

package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror"
)

var (
	flagScaleKills = flag.Int("crashtest.scaleout.kills", 5, "how many times TestScaleOutSurvivesKill9 kills one of its processes with SIGKILL")
	flagScaleProcs = flag.Int("crashtest.scaleout.processes", 2, "how many processes TestScaleOutSurvivesKill9 scales the mirror out to")
)

const (
	scalePartitions = 8 // enough that every process gets some
	scaleBacklog    = 5_000
	scalePlainChunk = 6       // ~600 plain records/s
	scaleMaxRecords = 200_000 // a cap the test does not reach in its budget: production goes on throughout
	// Short timeouts, so that takeovers are quick: the group session
	// timeout at the brokers' minimum (group.min.session.timeout.ms is
	// 6s on Kafka and on kfake), the transaction timeout a little longer,
	// so that a process taking over from a killed one finds the
	// transaction it left still open and has to wait it out, on kfake too
	// (which aborts right at the timeout; Kafka only every 10s).
	scaleTxnTimeout     = 8 * time.Second
	scaleSessionTimeout = 6 * time.Second
	// A kill waits, after the victim's first commit, a random time below
	// this, then for a transaction of the victim open on the target, and
	// lands at once.
	scaleKillDelayMax = 1200 * time.Millisecond
	// Timeouts of the conditions the test waits for. A share of the
	// partitions goes to a restarted process once the group has dropped
	// its killed predecessor (the session timeout); a takeover also waits
	// for the broker to abort the transaction the killed process left
	// open (the transaction timeout, plus up to 10s on Kafka, whose
	// transaction.abort.timed.out.transaction.cleanup.interval.ms is 10s).
	shareTimeout    = 60 * time.Second
	takeoverTimeout = 60 * time.Second
	statusTimeout   = 3 * time.Second
)

// TestScaleOutSurvivesKill9 is the proof of scale-out: several `switchyard
// mirror` processes with the same name and scaleOut share the partitions
// through the consumer group switchyard-mirror-<name> on the target; one
// of them is killed with SIGKILL mid-copy, while a transaction of its is
// open, several times. It is restarted at once with the same instance name
// (settling its open transaction), except once: then it stays down until
// the others have taken its partitions over — after the group session
// timeout, waiting out its open transaction. The workload keeps producing
// throughout. At the end every record is compared as in
// TestMirrorSurvivesKill9. See the package documentation.
func TestScaleOutSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds switchyard and kills scaled-out mirror processes; skipped with -short")
	}
	began := time.Now()
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	kills, nproc := *flagScaleKills, *flagScaleProcs
	if kills < 1 || nproc < 2 || nproc > 26 {
		t.Fatalf("-crashtest.scaleout.kills=%d -crashtest.scaleout.processes=%d: want at least 1 kill and 2 to 26 processes", kills, nproc)
	}
	t.Logf("backend %s, seed %d, %d processes, %d kills (replay the schedule: go test ./mirror/crashtest -run TestScaleOutSurvivesKill9 -v -args -crashtest.seed=%d)",
		kafkatest.Backend(), seed, nproc, kills, seed)
	rng := rand.New(rand.NewPCG(seed, 11))

	bin := buildSwitchyard(t)
	built := time.Now()

	source, target := kafkatest.Pair(t)
	hold := holdFakeEndTxn(t, target) // and slows EndTxn, as slowFakeEndTxn
	tgtAdm := kadm.NewClient(target.Client(t))
	topic := kafkatest.Topic(t, "scaleout")
	name := kafkatest.Topic(t, "scaleout")
	group := "switchyard-mirror-" + name // documented in mirror.Config.ScaleOut
	source.CreateTopic(t, topic, scalePartitions)
	instances := make([]string, nproc)
	cfgPaths := map[string]string{}
	for i := range instances {
		inst := string(rune('a' + i))
		instances[i] = inst
		cfgPaths[inst] = writeConfig(t, name, topic, source, target, func(c *mirror.Config) {
			c.ScaleOut, c.Instance = true, inst
			c.TxnTimeout, c.GroupSessionTimeout = scaleTxnTimeout, scaleSessionTimeout
		})
	}
	if kafkatest.Backend() == kafkatest.BackendReal {
		t.Cleanup(func() {
			deleteTopicsIfPassed(t, source, target, topic, name)
			deleteGroupIfPassed(t, tgtAdm, group)
		})
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

	// The workload: a backlog, then steady production until the end of
	// the kills.
	w := newWorkload(t, source, topic, scalePartitions)
	w.plainChunk, w.maxRecords = scalePlainChunk, scaleMaxRecords
	{
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := w.backlog(ctx, rand.New(rand.NewPCG(seed, 4)), scaleBacklog)
		cancel()
		if err != nil {
			t.Fatalf("produce the backlog to the source: %v", err)
		}
	}
	w.start(seed)

	// The processes, one per instance; cur holds each instance's current
	// run.
	cur := map[string]*mirrorProc{}
	start := func(inst string) {
		r := startMirror(t, bin, cfgPaths[inst], len(runs)+1, plan{kind: "instance " + inst})
		runs = append(runs, r)
		cur[inst] = r
	}
	live := func(except string) []*mirrorProc {
		var out []*mirrorProc
		for _, inst := range instances {
			if cur[inst] != nil && inst != except {
				out = append(out, cur[inst])
			}
		}
		return out
	}
	// The first process alone first: it creates the target topic. (Had
	// they all started at once, those whose topic sync found the topic
	// created by another but not yet in their metadata would leave it
	// unmirrored until their next topic sync, 30s later.)
	shareBegan := time.Now()
	start(instances[0])
	shares := waitShared(t, live(""))
	t.Logf("alone after %v: %s", time.Since(shareBegan).Round(time.Millisecond), describeShares(live(""), shares))
	shareBegan = time.Now()
	for _, inst := range instances[1:] {
		start(inst)
	}
	shares = waitShared(t, live(""))
	t.Logf("shared after %v: %s", time.Since(shareBegan).Round(time.Millisecond), describeShares(live(""), shares))

	// The kills: a random instance each time, mid-copy, at an open
	// transaction of its; restarted at once except after kill absent.
	var (
		prev          = progress{}
		absent        = 1 + rng.IntN(kills)
		openSeen      int           // kills that waited for and saw an open transaction of the victim
		openAfter     int           // kills after which one was still listed open
		settled       time.Duration // after the kill that left its instance down
		takeover      time.Duration
		killLoopBegan = time.Now()
	)
	for i := 1; i <= kills; i++ {
		victim := instances[rng.IntN(nproc)]
		delay := time.Duration(rng.Int64N(int64(scaleKillDelayMax)))
		r := cur[victim]
		r.waitFirstCommit(t, firstCommitTimeout)
		r.sleepUnlessExited(delay)
		owned := shareOf(r)
		if len(owned) == 0 {
			t.Fatalf("kill %d: run %d (instance %s) copies no partition to be killed in (status: %s)", i, r.n, victim, r.status())
		}
		var seen bool
		txnID := "switchyard-mirror-" + name + "-" + victim // documented in mirror.Config.Instance
		switch {
		case i == absent && hold != nil:
			// Left down after this kill: its transaction must be left
			// open, not being committed. On kfake, deterministically:
			// the commit is never done.
			seen = hold.killAtEndTxn(t, r, txnID)
		case i == absent:
			// On Kafka: frozen in a transaction the coordinator still
			// describes as ongoing, with records written, then killed.
			seen = r.killInOngoingTransaction(t, tgtAdm, txnID, topic)
		default:
			seen = r.waitOpenTransactionOn(t, tgtAdm, topic, owned)
			r.kill(t)
		}
		killedAt := time.Now()
		if seen {
			openSeen++
		}
		open := false
		for p := range openPartitions(t, tgtAdm, topic) {
			open = open || slices.Contains(owned, p)
		}
		if open {
			openAfter++
		}

		// What the runs left committed: never less than before.
		pr, err := readProgress(target, name, topic)
		if err != nil {
			t.Errorf("kill %d: after the kill, the committed offset maps cannot be read: %v\n%s", i, err, checkpointTail(target, name))
		} else {
			for _, p := range regressions(prev, pr) {
				t.Errorf("kill %d: the committed offset map went backwards: %s", i, p)
			}
			t.Logf("kill %d: run %d (instance %s, partitions %v) up %5dms, %4dms after its first commit and %-14s; %-11s after the kill; committed source position %d (+%d)",
				i, r.n, victim, owned, r.uptime.Milliseconds(), delay.Milliseconds(),
				map[bool]string{true: "at an open txn", false: "no open txn seen"}[seen],
				map[bool]string{true: "txn open", false: "no txn open"}[open], pr.sumNext(), pr.sumNext()-prev.sumNext())
			prev = pr
		}

		if i == absent {
			// Left down: the others take its partitions over, once the
			// group has dropped it and its transaction has settled.
			settled = waitSettled(t, tgtAdm, topic, owned, killedAt, live(victim))
			takeover = waitTakeover(t, live(victim), owned, killedAt)
			t.Logf("kill %d: instance %s left down; its transaction settled after %v, its partitions %v taken over after %v (group session timeout %v, transaction timeout %v): %s",
				i, victim, settled.Round(time.Millisecond), owned, takeover.Round(time.Millisecond), scaleSessionTimeout, scaleTxnTimeout,
				describeShares(live(victim), sharesNow(live(victim))))
		}
		start(victim)
		shareBegan := time.Now()
		shares = waitShared(t, live(""))
		t.Logf("kill %d: instance %s restarted as run %d; shared again after %v: %s", i, victim, cur[victim].n,
			time.Since(shareBegan).Round(time.Millisecond), describeShares(live(""), shares))
	}
	killLoopDone := time.Now()
	if w.next.Load() >= w.maxRecords {
		t.Errorf("the producers reached their cap of %d records during the kills: raise scaleMaxRecords", w.maxRecords)
	}

	// Stop producing; wait until the source's transactions are settled,
	// then until the processes have copied everything.
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
	waitCopied(t, target, name, topic, srcEnds, live("")...)
	for _, r := range live("") {
		r.terminate(t)
	}
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
	final, err := readProgress(target, name, topic)
	if err != nil {
		t.Fatalf("read the committed offset maps at the end: %v\n%s", err, checkpointTail(target, name))
	}
	for _, p := range regressions(prev, final) {
		t.Errorf("at the end: the committed offset map went backwards: %s", p)
	}
	for p := int32(0); p < scalePartitions; p++ {
		end, _ := srcEnds.Lookup(topic, p)
		checkOffsetMap(t, p, final[p], end.Offset, src[p], dst[p])
	}
	checkGroupPositions(ctx, t, tgtAdm, group, topic, final)
	compared := time.Now()
	runVerify(ctx, t, source, target, name, topic, scalePartitions, src)
	verified := time.Now()

	committed, aborted, txnsCommitted, txnsAborted := w.counts()
	copied := 0
	for _, rs := range dst {
		copied += len(rs)
	}
	t.Logf("%d kills (kill %d left its instance down: its transaction settled after %v, taken over after %v); %d saw a transaction of the victim open before the kill, %d still listed one open after it",
		kills, absent, settled.Round(time.Millisecond), takeover.Round(time.Millisecond), openSeen, openAfter)
	t.Logf("records: %d committed on the source (%d transactions committed), %d aborted (%d transactions); %d copied to the target over %d partitions by %d runs",
		committed, txnsCommitted, aborted, txnsAborted, copied, scalePartitions, len(runs))
	ms := func(from, to time.Time) time.Duration { return to.Sub(from).Round(time.Millisecond) }
	t.Logf("duration %v: build %v, backlog and first share %v, kills %v, caught up %v, read both sides %v, compare %v, verify %v",
		ms(began, verified), ms(began, built), ms(built, killLoopBegan), ms(killLoopBegan, killLoopDone),
		ms(killLoopDone, caughtUp), ms(caughtUp, read), ms(read, compared), ms(compared, verified))
}

// statusOf returns a run's /v1/status.
func statusOf(r *mirrorProc) (mirror.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	var st mirror.Status
	raw, err := r.fetchStatus(ctx)
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return st, err
}

// shareOf returns the partitions a run copies: nil if its status cannot
// be read (before its status server is up) or says it is not ready — it
// copies nothing then, and until it has joined the group its status lists
// every partition it restored from the checkpoint topic, as a single
// process would copy.
func shareOf(r *mirrorProc) []int32 {
	st, err := statusOf(r)
	if err != nil || !st.Ready {
		return nil
	}
	out := make([]int32, 0, len(st.Partitions))
	for _, p := range st.Partitions {
		out = append(out, p.Partition)
	}
	return out
}

// sharesNow returns the partitions each run copies, nil for a run whose
// status cannot be read.
func sharesNow(rs []*mirrorProc) map[*mirrorProc][]int32 {
	out := map[*mirrorProc][]int32{}
	for _, r := range rs {
		out[r] = shareOf(r)
	}
	return out
}

func describeShares(rs []*mirrorProc, shares map[*mirrorProc][]int32) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("run %d (%s) copies %v", r.n, strings.TrimPrefix(r.plan.kind, "instance "), shares[r]))
	}
	return strings.Join(parts, ", ")
}

// waitShared waits until the runs share the partitions: each copies a
// non-empty set, the sets are disjoint and together cover every
// partition. The statuses are read twice in a row and must agree, so
// that a partition moving from one run to another between two reads is
// not taken for a partition copied twice; overlapping sets that agree
// are logged (whether anything was written twice, the final comparison
// tells).
func waitShared(t *testing.T, rs []*mirrorProc) map[*mirrorProc][]int32 {
	t.Helper()
	deadline := time.Now().Add(shareTimeout)
	var last map[*mirrorProc][]int32
	overlaps := 0
	for {
		a, b := sharesNow(rs), sharesNow(rs)
		last = b
		if maps.EqualFunc(a, b, slices.Equal) {
			owner := map[int32]*mirrorProc{}
			ok := true
			for _, r := range rs {
				if len(b[r]) == 0 {
					ok = false
				}
				for _, p := range b[r] {
					if o := owner[p]; o != nil {
						ok = false
						if overlaps++; overlaps <= 3 {
							t.Logf("partition %d listed by runs %d and %d (two status reads agreeing): %s", p, o.n, r.n, describeShares(rs, b))
						}
					}
					owner[p] = r
				}
			}
			if ok && len(owner) == scalePartitions {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the processes did not share the %d partitions within %v: %s", scalePartitions, shareTimeout, describeShares(rs, last))
		}
		if r := pauseUnlessExited(statusPoll, rs...); r != nil {
			t.Fatalf("mirror run %d exited by itself while the processes were to share the partitions: %v", r.n, r.waitErr)
		}
	}
}

// waitTakeover waits until the runs rs copy every partition, and have
// each committed a transaction after killedAt on every partition of lost
// (those of the killed run). It returns the time since killedAt.
func waitTakeover(t *testing.T, rs []*mirrorProc, lost []int32, killedAt time.Time) time.Duration {
	t.Helper()
	deadline := killedAt.Add(takeoverTimeout)
	var pending string
	for {
		owner := map[int32]mirror.PartitionStatus{}
		for _, r := range rs {
			st, err := statusOf(r)
			if err != nil || !st.Ready {
				continue
			}
			for _, p := range st.Partitions {
				owner[p.Partition] = p
			}
		}
		pending = ""
		for p := range int32(scalePartitions) {
			ps, ok := owner[p]
			switch {
			case !ok:
				pending = fmt.Sprintf("partition %d copied by none", p)
			case slices.Contains(lost, p) && !ps.LastCommit.After(killedAt):
				pending = fmt.Sprintf("partition %d taken over, not yet committed (next source offset %d, error %q)", p, ps.Next, ps.LastError)
			}
			if pending != "" {
				break
			}
		}
		if pending == "" {
			return time.Since(killedAt)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed process's partitions %v were not taken over within %v: %s (%s)", lost, takeoverTimeout, pending,
				describeShares(rs, sharesNow(rs)))
		}
		if r := pauseUnlessExited(statusPoll, rs...); r != nil {
			t.Fatalf("mirror run %d exited by itself while taking partitions over: %v", r.n, r.waitErr)
		}
	}
}

// waitSettled waits until no transaction is open on any of the target
// partitions ps of a killed run — the broker has aborted the transaction
// it left open, or written the markers of one it had committed — while
// the runs rs go on, and returns the time since killedAt. Nothing else
// writes those partitions before: a run taking them over waits for that
// transaction to settle first.
func waitSettled(t *testing.T, adm *kadm.Client, topic string, ps []int32, killedAt time.Time, rs []*mirrorProc) time.Duration {
	t.Helper()
	deadline := killedAt.Add(takeoverTimeout)
	for {
		open := []int32{}
		for p := range openPartitions(t, adm, topic) {
			if slices.Contains(ps, p) {
				open = append(open, p)
			}
		}
		if len(open) == 0 {
			return time.Since(killedAt)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transaction of the killed process is still open on %v %v after the kill", open, takeoverTimeout)
		}
		if r := pauseUnlessExited(openTxnPoll, rs...); r != nil {
			t.Fatalf("mirror run %d exited by itself while the killed process's transaction was settling: %v", r.n, r.waitErr)
		}
	}
}

// endTxnHold holds, on a kfake target, the EndTxn of one transactional id
// and drops it: its process is killed meanwhile, and the transaction —
// records, checkpoint deltas and group positions all written — stays open
// until the broker aborts it. Every other EndTxn is delayed as
// slowFakeEndTxn does (one control function, so that no request sleeps
// twice).
type endTxnHold struct {
	mu      sync.Mutex
	txnID   string        // "" when disarmed
	held    chan struct{} // closed once an EndTxn of txnID is held
	release chan struct{} // closed to drop it
}

// holdFakeEndTxn installs the hold, disarmed, on a kfake target: nil on
// real Kafka (and EndTxn not slowed).
func holdFakeEndTxn(t *testing.T, target *kafkatest.Cluster) *endTxnHold {
	c := target.Fake
	if c == nil {
		return nil
	}
	h := &endTxnHold{}
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		h.mu.Lock()
		r := req.(*kmsg.EndTxnRequest)
		if h.txnID == "" || r.TransactionalID != h.txnID {
			h.mu.Unlock()
			d := rand.N(kfakeEndTxnDelayMax)
			c.SleepControl(func() { time.Sleep(d) })
			return nil, nil, false // then handled as usual
		}
		select {
		case <-h.held:
		default:
			close(h.held)
		}
		release := h.release
		h.mu.Unlock()
		c.SleepControl(func() { <-release })
		return nil, errors.New("crashtest: EndTxn dropped"), true // closes the connection
	})
	t.Cleanup(h.disarm)
	return h
}

func (h *endTxnHold) arm(txnID string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.txnID, h.held, h.release = txnID, make(chan struct{}), make(chan struct{})
	return h.held
}

// disarm drops the EndTxn held, if any, and lets the next ones through.
func (h *endTxnHold) disarm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.txnID != "" {
		close(h.release)
		h.txnID = ""
	}
}

// killAtEndTxn kills run r when it asks to commit a transaction of
// transactional id txnID, before the commit is done; it reports whether it
// did (false: no commit was asked within openTxnWait, r was killed then).
func (h *endTxnHold) killAtEndTxn(t *testing.T, r *mirrorProc, txnID string) bool {
	t.Helper()
	held := h.arm(txnID)
	defer h.disarm()
	timer := time.NewTimer(openTxnWait)
	defer timer.Stop()
	ok := false
	select {
	case <-held:
		ok = true
	case <-timer.C:
	case <-r.exited: // kill reports it
	}
	r.kill(t)
	return ok
}

// killInOngoingTransaction kills run r inside a transaction of
// transactional id txnID, with records written to the target topic, that
// it has not asked to commit: it stops the process (SIGSTOP) when the
// coordinator describes such a transaction as ongoing, and kills it if the
// coordinator still does on two more reads — an EndTxn sent just before
// the stop would have been handled by then — or lets it go on (SIGCONT)
// and waits for the next one. It reports whether it did, within
// openTxnWait; r is killed anyway.
func (r *mirrorProc) killInOngoingTransaction(t *testing.T, adm *kadm.Client, txnID, topic string) bool {
	t.Helper()
	deadline := time.Now().Add(openTxnWait)
	tick := time.NewTicker(openTxnPoll)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if ongoingTransaction(t, adm, txnID, topic) {
			if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				break // exited: kill reports it
			}
			still := true
			for range 2 {
				still = still && ongoingTransaction(t, adm, txnID, topic)
			}
			if still {
				r.kill(t)
				return true
			}
			if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				break
			}
		}
		select {
		case <-r.exited:
			r.kill(t) // reports it
			return false
		case <-tick.C:
		}
	}
	r.kill(t)
	return false
}

// ongoingTransaction reports whether the transaction coordinator
// describes transactional id txnID as in an ongoing transaction that
// includes partitions of the target topic.
func ongoingTransaction(t *testing.T, adm *kadm.Client, txnID, topic string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
	defer cancel()
	txns, err := adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		t.Logf("describe transaction %s: %v", txnID, err)
		return false
	}
	d, ok := txns[txnID]
	return ok && d.Err == nil && d.State == "Ongoing" && len(d.Topics[topic]) > 0
}

// waitOpenTransactionOn waits until a transaction is open on one of the
// target partitions ps, or openTxnWait passes (it reports false then).
func (r *mirrorProc) waitOpenTransactionOn(t *testing.T, adm *kadm.Client, topic string, ps []int32) bool {
	t.Helper()
	deadline := time.Now().Add(openTxnWait)
	tick := time.NewTicker(openTxnPoll)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		for p := range openPartitions(t, adm, topic) {
			if slices.Contains(ps, p) {
				return true
			}
		}
		select {
		case <-r.exited:
			return false // kill reports it
		case <-tick.C:
		}
	}
	return false
}

// checkGroupPositions checks the positions the processes committed to the
// group through TxnOffsetCommit, with every transaction: for each target
// partition, the source position its offset map reached.
func checkGroupPositions(ctx context.Context, t *testing.T, adm *kadm.Client, group, topic string, final progress) {
	t.Helper()
	offs, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		t.Errorf("committed offsets of group %s: %v", group, err)
		return
	}
	for p := range int32(scalePartitions) {
		o, ok := offs.Lookup(topic, p)
		switch m := final[p]; {
		case !ok:
			t.Errorf("group %s: no offset committed for %s/%d", group, topic, p)
		case m == nil:
			// checkOffsetMap reports it.
		case o.At != m.Next():
			t.Errorf("group %s: %s/%d at %d, its committed offset map reaches source offset %d", group, topic, p, o.At, m.Next())
		}
	}
}

// deleteGroupIfPassed deletes the mirror's group from the shared real
// target when the test passed.
func deleteGroupIfPassed(t *testing.T, adm *kadm.Client, group string) {
	if t.Failed() {
		t.Logf("kept group %s on the target for a post-mortem", group)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.DeleteGroups(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Logf("delete group %s on the target: %v", group, err)
	}
}
