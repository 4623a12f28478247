package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/stubmirror"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// txnWorker runs transactions through one transactional franz-go client —
// the same client from start to end, never re-created — and remembers the
// values of the committed and the aborted ones.
type txnWorker struct {
	cl    *kgo.Client
	topic string
	per   int // records per transaction

	mu        sync.Mutex
	next      int      // number of the next transaction
	ended     int      // transactions committed or aborted
	committed []string // values of committed transactions, in commit order
	aborted   []string
	txnOf     map[string]int
}

func newTxnWorker(cl *kgo.Client, topic string, per int) *txnWorker {
	return &txnWorker{cl: cl, topic: topic, per: per, txnOf: map[string]int{}}
}

// begin starts the next transaction and produces its records (acknowledged
// when begin returns): the transaction is open.
func (w *txnWorker) begin(ctx context.Context) (int, []string, error) {
	w.mu.Lock()
	n := w.next
	w.next++
	w.mu.Unlock()
	if err := w.cl.BeginTransaction(); err != nil {
		return n, nil, fmt.Errorf("begin transaction %d: %w", n, err)
	}
	rs := make([]*kgo.Record, w.per)
	values := make([]string, w.per)
	for i := range rs {
		values[i] = fmt.Sprintf("t%d-%d", n, i)
		rs[i] = &kgo.Record{Topic: w.topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(values[i])}
	}
	if err := w.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return n, nil, fmt.Errorf("transaction %d: produce: %w", n, err)
	}
	return n, values, nil
}

// end commits or aborts the transaction begin opened.
func (w *txnWorker) end(ctx context.Context, n int, values []string, commit bool) error {
	if err := w.cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return fmt.Errorf("end transaction %d (commit %v): %w", n, commit, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended++
	for _, v := range values {
		w.txnOf[v] = n
	}
	if commit {
		w.committed = append(w.committed, values...)
	} else {
		w.aborted = append(w.aborted, values...)
	}
	return nil
}

// one runs a whole transaction; every fourth is aborted.
func (w *txnWorker) one(ctx context.Context) error {
	n, values, err := w.begin(ctx)
	if err != nil {
		return err
	}
	return w.end(ctx, n, values, n%4 != 3)
}

func (w *txnWorker) done() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended
}

// readCommitted reads every committed record value of a topic as a
// read_committed consumer sees it, per partition in offset order.
func readCommitted(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) map[int32][]string {
	t.Helper()
	ends := c.SettledEnds(ctx, t, topic)
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	next := map[int32]int64{}
	out := map[int32][]string{}
	for {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if next[o.Partition] < o.Offset {
				done = false
			}
		})
		if done {
			return out
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s on %s: %v", topic, c.Name, ctx.Err())
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("read %s/%d on %s: %v", topic, p, c.Name, err) })
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				out[r.Partition] = append(out[r.Partition], string(r.Value))
			}
		})
	}
}

// checkTxnRecords checks what the clusters hold against what the worker
// committed and aborted: every committed value exactly once over both
// clusters, no aborted value, each transaction whole on one cluster, the
// source holding only transactions before the switch and the target only
// after, and per key the transactions in order on each cluster.
func checkTxnRecords(t *testing.T, w *txnWorker, onSource, onTarget map[int32][]string) (sourceTxns, targetTxns int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	count := map[string]int{}
	clusterOf := map[int]string{}
	lastSource, firstTarget := -1, int(^uint(0)>>1)
	for name, parts := range map[string]map[int32][]string{"source": onSource, "target": onTarget} {
		for p, values := range parts {
			lastByKey := map[string]int{}
			for _, v := range values {
				count[v]++
				n, ok := w.txnOf[v]
				if !ok {
					t.Errorf("%s partition %d holds %s, which no ended transaction wrote", name, p, v)
					continue
				}
				if c, seen := clusterOf[n]; seen && c != name {
					t.Errorf("transaction %d is split between the clusters", n)
				}
				clusterOf[n] = name
				key := v[strings.IndexByte(v, '-')+1:]
				if last, ok := lastByKey[key]; ok && n <= last {
					t.Errorf("%s partition %d: %s after transaction %d", name, p, v, last)
				}
				lastByKey[key] = n
				if name == "source" {
					lastSource = max(lastSource, n)
				} else {
					firstTarget = min(firstTarget, n)
				}
			}
		}
	}
	for _, v := range w.committed {
		if count[v] != 1 {
			t.Errorf("committed %s found %d times", v, count[v])
		}
	}
	for _, v := range w.aborted {
		if count[v] != 0 {
			t.Errorf("aborted %s visible to a read_committed consumer", v)
		}
	}
	if lastSource >= firstTarget {
		t.Errorf("transaction %d on the source, %d already on the target", lastSource, firstTarget)
	}
	for _, c := range clusterOf {
		if c == "source" {
			sourceTxns++
		} else {
			targetTxns++
		}
	}
	return sourceTxns, targetTxns
}

// TestTxnProducerAcrossSwitch runs a transactional producer continuously
// through the proxy — commits, and an abort every fourth transaction —
// while the proxy switches to the target, alone or inside a Produce gate
// as a cutover does. The producer is never re-created and sees no error;
// every committed record is on exactly one cluster, once, its transaction
// whole; aborted records are invisible; the transactions after the switch
// ran on the target under an identity the proxy obtained there.
func TestTxnProducerAcrossSwitch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []kgo.Opt
		gate   *Gate
		capped bool // the client cannot use KIP-890 part 2
	}{
		// The client's default: KIP-890 part 2 where the brokers offer
		// transaction.version 2 (implicit AddPartitions in Produce v12+,
		// the epoch bumped by every EndTxn v5).
		{name: "default", opts: nil},
		// Capped at Kafka 3.9's versions: AddPartitionsToTxn before
		// producing, AddOffsetsToTxn, epochs that do not move.
		{name: "pre-KIP-890", opts: []kgo.Opt{kgo.MaxVersions(kversion.V3_9_0())}, capped: true},
		{name: "hold gate", gate: &Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}},
		{name: "reject gate", gate: &Gate{APIKeys: []int16{keyProduce}, Mode: GateReject}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			source, target := kafkatest.Pair(t)
			topic := kafkatest.Topic(t, "txn")
			source.CreateTopic(t, topic, 3)
			target.CreateTopic(t, topic, 3)
			tp := startProxy(t, source, target)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			txnID := kafkatest.Topic(t, "tx")
			cl := tp.client(t, append([]kgo.Opt{kgo.TransactionalID(txnID), retryFast()}, tc.opts...)...)
			w := newTxnWorker(cl, topic, 6)

			stop := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				for {
					select {
					case <-stop:
						errc <- nil
						return
					default:
					}
					if err := w.one(ctx); err != nil {
						errc <- err
						return
					}
				}
			}()
			waitTxns := func(n int) {
				t.Helper()
				eventually(t, 60*time.Second, fmt.Sprintf("%d transactions", n), func() error {
					select {
					case err := <-errc:
						t.Fatalf("producer: %v", err)
					default:
					}
					if d := w.done(); d < n {
						return fmt.Errorf("%d done", d)
					}
					return nil
				})
			}
			waitTxns(8)
			if tc.gate != nil {
				if err := tp.SetGate(*tc.gate); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := tp.Switch(ctx, "target")
			if err != nil {
				t.Fatalf("switch: %v", err)
			}
			if tc.gate != nil {
				tp.ClearGate()
			}
			t.Logf("switch: %+v", rep)
			before := w.done()
			waitTxns(before + 8)
			close(stop)
			if err := <-errc; err != nil {
				t.Fatalf("producer: %v", err)
			}

			onSource := readCommitted(ctx, t, source, topic)
			onTarget := readCommitted(ctx, t, target, topic)
			s, g := checkTxnRecords(t, w, onSource, onTarget)
			t.Logf("%d transactions on the source, %d on the target", s, g)
			if s == 0 || g < 6 { // 8 transactions after the switch, 2 at most aborted
				t.Errorf("%d transactions committed on the source, %d on the target: the switch did not land mid-stream", s, g)
			}
			// With transaction.version 2 finalized on both clusters, every
			// EndTxn on the target bumped the epoch and was mapped back.
			v2 := txnVersion(ctx, t, cl) >= 2 && !tc.capped
			tp.pids.txns.mu.Lock()
			m := tp.pids.txns.byID[txnID].m
			tp.pids.txns.mu.Unlock()
			switch {
			case m == nil || m.on.name != "target":
				t.Fatalf("no mapping of %s onto the target", txnID)
			case v2 && m.ends < g:
				t.Errorf("KIP-890 part 2: %d epoch bumps mapped back for %d transactions on the target", m.ends, g)
			case !v2 && m.ends != 0:
				t.Errorf("without KIP-890 part 2: %d epoch bumps mapped back", m.ends)
			}
			t.Logf("transaction.version 2 in use: %v; EndTxn epoch bumps mapped on the target: %d", v2, m.ends)
			if got := testutil.ToFloat64(tp.m.pidRemaps.WithLabelValues("target")); got != 1 {
				t.Errorf("transactional identities obtained on the target: %v, want 1", got)
			}
			if st := tp.Status(); st.InFlightByAPI[keyProduce] != 0 || st.InFlightByAPI[keyEndTxn] != 0 {
				t.Errorf("after the last commit: in flight %v, want no open transaction", st.InFlightByAPI)
			}
		})
	}
}

// txnVersion returns the transaction.version the proxy presents as
// finalized (the lowest of its clusters'), 0 when none.
func txnVersion(ctx context.Context, t *testing.T, cl *kgo.Client) int16 {
	t.Helper()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("api versions: %v", err)
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" {
			return f.MaxVersionLevel
		}
	}
	return 0
}

// TestTxnSwitchWaitsForOpenTransaction: a switch that starts while a
// transaction is open waits for it — the open transaction shows as one
// Produce and one EndTxn in flight — and lands once it commits; the
// transaction is whole on the source and the next one runs on the target.
func TestTxnSwitchWaitsForOpenTransaction(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "txnwait")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, target, func(c *Config) { c.DrainTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := newTxnWorker(tp.client(t, kgo.TransactionalID(kafkatest.Topic(t, "tx")), retryFast()), topic, 6)
	if err := w.one(ctx); err != nil {
		t.Fatal(err)
	}
	n, values, err := w.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := tp.Status(); st.InFlightByAPI[keyProduce] != 1 || st.InFlightByAPI[keyEndTxn] != 1 {
		t.Fatalf("with a transaction open: in flight %v, want one Produce and one EndTxn", st.InFlightByAPI)
	}
	type result struct {
		rep SwitchReport
		err error
	}
	switched := make(chan result, 1)
	go func() {
		rep, err := tp.Switch(ctx, "target")
		switched <- result{rep, err}
	}()
	eventually(t, 10*time.Second, "switch draining", func() error {
		if !tp.Status().Switching {
			return errNotYet
		}
		return nil
	})
	// A metadata lookup is answered meanwhile, not parked: on a client's
	// one connection per broker it may stand before the EndTxn.
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	if resp := dialWire(t, tp.Addr().String(), "lookup").roundTrip(md).(*kmsg.MetadataResponse); len(resp.Brokers) == 0 {
		t.Errorf("metadata while the switch waits: no brokers")
	}
	select {
	case r := <-switched:
		t.Fatalf("switch returned (%+v, %v) with a transaction open", r.rep, r.err)
	default:
	}
	if err := w.end(ctx, n, values, true); err != nil {
		t.Fatal(err)
	}
	r := <-switched
	if r.err != nil {
		t.Fatalf("switch: %v", r.err)
	}
	if err := w.one(ctx); err != nil { // transaction 2: committed, on the target
		t.Fatal(err)
	}
	s, g := checkTxnRecords(t, w, readCommitted(ctx, t, source, topic), readCommitted(ctx, t, target, topic))
	if s != 2 || g != 1 {
		t.Errorf("%d transactions on the source, %d on the target; want 2 and 1", s, g)
	}
}

// TestTxnSwitchFailsWhenTransactionOutlivesDrain: a transaction still open
// at the drain deadline makes the switch fail with ErrOpenTransactions,
// naming the transactional id; the proxy stays on the source, the
// transaction commits there, and a later switch succeeds.
func TestTxnSwitchFailsWhenTransactionOutlivesDrain(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "txnlong")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, target, func(c *Config) { c.DrainTimeout = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	txnID := kafkatest.Topic(t, "tx")
	w := newTxnWorker(tp.client(t, kgo.TransactionalID(txnID), retryFast()), topic, 6)
	n, values, err := w.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tp.Switch(ctx, "target")
	if !errors.Is(err, ErrOpenTransactions) || !strings.Contains(err.Error(), txnID) {
		t.Fatalf("switch with a transaction open past the drain: %v, want ErrOpenTransactions naming %s", err, txnID)
	}
	if st := tp.Status(); st.ActiveCluster != "source" || st.Switching || st.Switches != 0 {
		t.Fatalf("after the failed switch: active %s, switching %v, switches %d", st.ActiveCluster, st.Switching, st.Switches)
	}
	if err := w.end(ctx, n, values, true); err != nil {
		t.Fatalf("the transaction could not finish on the source: %v", err)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch with no transaction open: %v", err)
	}
	if err := w.one(ctx); err != nil {
		t.Fatal(err)
	}
	s, g := checkTxnRecords(t, w, readCommitted(ctx, t, source, topic), readCommitted(ctx, t, target, topic))
	if s != 1 || g != 1 {
		t.Errorf("%d transactions on the source, %d on the target; want 1 and 1", s, g)
	}
}

// TestTxnStartGatedByProduceGate: under a REJECT gate on Produce, a
// transaction that is open goes on to its commit, and a new one cannot
// start (franz-go retries the rejected produce until the gate lifts).
func TestTxnStartGatedByProduceGate(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "txngate")
	source.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := newTxnWorker(tp.client(t, kgo.TransactionalID(kafkatest.Topic(t, "tx")), retryFast()), topic, 6)
	n, values, err := w.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateReject}); err != nil {
		t.Fatal(err)
	}
	// More records of the open transaction, then its commit, pass the gate.
	more := &kgo.Record{Topic: topic, Key: []byte("k0"), Value: []byte(fmt.Sprintf("t%d-more", n))}
	if err := w.cl.ProduceSync(ctx, more).FirstErr(); err != nil {
		t.Fatalf("produce in the open transaction under the gate: %v", err)
	}
	if err := w.end(ctx, n, append(values, string(more.Value)), true); err != nil {
		t.Fatalf("commit under the gate: %v", err)
	}
	// The next transaction cannot start until the gate lifts: its first
	// request is rejected — the Produce itself under KIP-890 part 2, its
	// AddPartitionsToTxn before.
	rejected := func() float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "outcome", "reject")
	}
	before := rejected()
	done := make(chan error, 1)
	go func() { done <- w.one(ctx) }()
	eventually(t, 20*time.Second, "the next transaction's start rejected", func() error {
		if rejected()-before < 2 {
			return errNotYet
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("a transaction completed under the gate (%v)", err)
	default:
	}
	tp.ClearGate()
	if err := <-done; err != nil {
		t.Fatalf("after the gate lifted: %v", err)
	}
	got := readCommitted(ctx, t, source, topic)
	var all []string
	for _, vs := range got {
		all = append(all, vs...)
	}
	sort.Strings(all)
	w.mu.Lock()
	want := slices.Clone(w.committed)
	w.mu.Unlock()
	sort.Strings(want)
	if !slices.Equal(all, want) {
		t.Errorf("source holds %v, want %v", all, want)
	}
}

// TestTxnGroupSessionAcrossSwitch runs a consume-transform-produce loop
// (franz-go's GroupTransactSession: transactional produce plus
// TxnOffsetCommit of the group's offsets in the same transaction) through
// the proxy across the cutover procedure — gate Produce (HOLD), drain, copy
// the group's committed offsets, switch, lift. Every input record is
// processed exactly once over both clusters (read_committed), in order,
// and the session reports no error.
func TestTxnGroupSessionAcrossSwitch(t *testing.T) {
	source, target := kafkatest.Pair(t)
	in, out := kafkatest.Topic(t, "txnin"), kafkatest.Topic(t, "txnout")
	for _, c := range []*kafkatest.Cluster{source, target} {
		c.CreateTopic(t, in, 1)
		c.CreateTopic(t, out, 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 3000
	input := taggedValues("i", 0, n)
	rs := make([]*kgo.Record, n)
	for i, v := range input {
		rs[i] = &kgo.Record{Topic: in, Value: []byte(v)}
	}
	if err := source.Client(t).ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The input is on the target too, at the same offsets, as a mirror
	// would have copied it.
	if copied, err := stubmirror.CopyTopic(ctx, source.Bootstrap, target.Bootstrap, in); err != nil || copied != n {
		t.Fatalf("copy input: %d records, %v", copied, err)
	}
	tp := startProxy(t, source, target)
	group := kafkatest.Topic(t, "g")
	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(tp.Addr().String()),
		kgo.TransactionalID(kafkatest.Topic(t, "tx")), kgo.ConsumerGroup(group), kgo.ConsumeTopics(in),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), retryFast())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	var (
		mu        sync.Mutex
		committed = map[string]bool{}
		sessErr   error
	)
	processed := func() int {
		mu.Lock()
		defer mu.Unlock()
		if sessErr != nil {
			t.Fatalf("session: %v", sessErr)
		}
		return len(committed)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for processed() < n && ctx.Err() == nil {
			fs := sess.PollRecords(ctx, 10)
			var ferr error
			fs.EachError(func(_ string, _ int32, err error) {
				// The group moving to the target's coordinator shows as
				// a failed join (UNKNOWN_MEMBER_ID), after which franz-go
				// joins again by itself; anything else is a failure.
				if !errors.Is(err, kerr.UnknownMemberID) && ctx.Err() == nil {
					ferr = err
				}
			})
			if ferr != nil {
				mu.Lock()
				sessErr = ferr
				mu.Unlock()
				return
			}
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			if err := sess.Begin(); err != nil {
				mu.Lock()
				sessErr = fmt.Errorf("begin: %w", err)
				mu.Unlock()
				return
			}
			var vals []string
			for _, r := range recs {
				vals = append(vals, string(r.Value))
				sess.Produce(ctx, &kgo.Record{Topic: out, Value: r.Value}, nil)
			}
			ok, err := sess.End(ctx, kgo.TryCommit)
			mu.Lock()
			if err != nil {
				sessErr = fmt.Errorf("end: %w", err)
			}
			if ok {
				for _, v := range vals {
					committed[v] = true
				}
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	eventually(t, 60*time.Second, "records processed before the switch", func() error {
		if p := processed(); p < 300 {
			return fmt.Errorf("%d processed", p)
		}
		return nil
	})
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "produce and transactions drained", func() error {
		if n := tp.Status().InFlightByAPI[keyProduce]; n != 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	if err := stubmirror.CopyGroupOffsets(ctx, source.Bootstrap, target.Bootstrap, group); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	tp.ClearGate()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%d of %d processed", processed(), n)
	}
	if p := processed(); p != n {
		t.Fatalf("%d of %d processed", p, n)
	}

	var got []string
	onSource, onTarget := readCommitted(ctx, t, source, out), readCommitted(ctx, t, target, out)
	got = append(got, onSource[0]...)
	got = append(got, onTarget[0]...)
	if !slices.Equal(got, input) {
		count := map[string]int{}
		for _, v := range got {
			count[v]++
		}
		var wrong []string
		for _, v := range input {
			if count[v] != 1 && len(wrong) < 5 {
				wrong = append(wrong, fmt.Sprintf("%s×%d", v, count[v]))
			}
		}
		t.Errorf("output: %d records (%d on the source, %d on the target), want the %d inputs once each in order; e.g. %v",
			len(got), len(onSource[0]), len(onTarget[0]), n, wrong)
	}
	if len(onSource[0]) == 0 || len(onTarget[0]) == 0 {
		t.Errorf("output %d on the source, %d on the target: the switch did not land mid-stream", len(onSource[0]), len(onTarget[0]))
	}
	t.Logf("%d on the source, %d on the target", len(onSource[0]), len(onTarget[0]))
}

// fakePairWithTopic starts a source and a target kfake cluster of one
// broker each (every request reaches the coordinator and the leader),
// both holding a new topic of the given partitions.
func fakePairWithTopic(t *testing.T, prefix string, partitions int32) (source, target *kafkatest.Cluster, topic string) {
	t.Helper()
	source, target = kafkatest.NewFake(t, "source", 1), kafkatest.NewFake(t, "target", 1)
	topic = kafkatest.Topic(t, prefix)
	source.CreateTopic(t, topic, partitions)
	target.CreateTopic(t, topic, partitions)
	return source, target, topic
}

// holdProducesOf relays a one-broker cluster, withholding the responses to
// the Produce requests of one client id until the test releases them.
func holdProducesOf(t *testing.T, backend *kafkatest.Cluster, clientID string) *faultyRelay {
	t.Helper()
	return newFaultyRelay(t, backend, func(key, _ int16, id string) faultAction {
		if id == clientID && key == keyProduce {
			return faultHoldResponse
		}
		return faultNone
	})
}

// txnBatch encodes a transactional v2 batch of the given values.
func txnBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, Attributes: 0x10, LastOffsetDelta: int32(len(values) - 1),
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq,
		NumRecords: int32(len(values)), Records: recs}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// txnProduce is a transactional Produce of one batch to partition part.
func txnProduce(version, acks int16, txnID, topic string, part int32, batch []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = version, acks, 5000
	req.TransactionID = &txnID
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = part, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// initTxnOnWire runs InitProducerId for a transactional id on c, retrying
// while the coordinator loads, and returns the response.
func initTxnOnWire(t *testing.T, c *wireConn, txnID string, timeout int32) *kmsg.InitProducerIDResponse {
	t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.Version = 4
	req.TransactionalID, req.TransactionTimeoutMillis = &txnID, timeout
	req.ProducerID, req.ProducerEpoch = -1, -1
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp := c.roundTrip(req).(*kmsg.InitProducerIDResponse)
		if !kerr.IsRetriable(kerr.ErrorForCode(resp.ErrorCode)) || time.Now().After(deadline) {
			return resp
		}
		time.Sleep(100 * time.Millisecond) // the broker offers nothing to wait on
	}
}

// TestTxnRefusedRequestsOpenNothing: requests the cluster refuses — an
// InitProducerId asking for a 24.8-day transaction timeout
// (INVALID_TRANSACTION_TIMEOUT), a transactional Produce and an
// AddPartitionsToTxn for a producer the cluster never initialised — open no
// transaction, leave no tracked timeout and no transactional id behind, and
// a switch right after them lands.
func TestTxnRefusedRequestsOpenNothing(t *testing.T) {
	source, target, topic := fakePairWithTopic(t, "txnrefused", 1)
	tp := startProxy(t, source, target, func(c *Config) { c.DrainTimeout = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const txnID = "hostile-tx"
	c := dialWire(t, tp.Addr().String(), "hostile")
	if resp := initTxnOnWire(t, c, txnID, math.MaxInt32); resp.ErrorCode != kerr.InvalidTransactionTimeout.Code {
		t.Fatalf("InitProducerId with a 24.8-day timeout: %v, want INVALID_TRANSACTION_TIMEOUT", kerr.ErrorForCode(resp.ErrorCode))
	}
	produce := txnProduce(9, -1, txnID, topic, 0, txnBatch(1, 0, 0, "never"))
	if code := codes(t, c.roundTrip(produce))[0]; code == 0 {
		t.Fatal("transactional Produce of an uninitialised producer accepted")
	}
	add := kmsg.NewPtrAddPartitionsToTxnRequest()
	add.Version, add.TransactionalID, add.ProducerID, add.ProducerEpoch = 3, txnID, 1, 0
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = topic, []int32{0}
	add.Topics = append(add.Topics, at)
	for _, rt := range c.roundTrip(add).(*kmsg.AddPartitionsToTxnResponse).Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 {
				t.Fatal("AddPartitionsToTxn of an uninitialised producer accepted")
			}
		}
	}
	if st := tp.Status(); st.InFlightByAPI[keyProduce] != 0 || st.InFlightByAPI[keyEndTxn] != 0 {
		t.Errorf("after refused transactional requests: in flight %v, want nothing", st.InFlightByAPI)
	}
	tp.pids.txns.mu.Lock()
	e, known := tp.pids.txns.byID[txnID]
	tp.pids.txns.mu.Unlock()
	if known {
		t.Errorf("refused requests left %s in the table (timeout %v, open %v)", txnID, e.timeout, e.open)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch after refused transactional requests: %v", err)
	}
}

// TestTxnTimeoutCapped: a transaction opened by a producer whose accepted
// InitProducerId asked for 10 minutes is taken to be over once
// MaxTransactionTimeout (here 1 minute) and the abort margin have passed,
// not 10 minutes: a switch waiting for it lands then.
func TestTxnTimeoutCapped(t *testing.T) {
	source, target, topic := fakePairWithTopic(t, "txncap", 1)
	tp := startProxy(t, source, target, func(c *Config) {
		c.MaxTransactionTimeout = time.Minute
		c.DrainTimeout = 200 * time.Millisecond
	})
	clk := newFakeClock()
	tp.pids.setClock(clk)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	txnID := kafkatest.Topic(t, "tx")
	w := newTxnWorker(tp.client(t, kgo.TransactionalID(txnID), kgo.TransactionTimeout(10*time.Minute), retryFast()), topic, 3)
	if _, _, err := w.begin(ctx); err != nil {
		t.Fatal(err)
	}
	if n := tp.pids.txns.openCount(); n != 1 {
		t.Fatalf("%d transactions open after the first produce, want 1", n)
	}
	clk.Advance(time.Minute + txnAbortMargin - time.Second)
	if _, err := tp.Switch(ctx, "target"); !errors.Is(err, ErrOpenTransactions) {
		t.Fatalf("switch within the capped timeout: %v, want ErrOpenTransactions", err)
	}
	clk.Advance(2 * time.Second)
	if n := tp.pids.txns.openCount(); n != 0 {
		t.Fatalf("%d transactions open past MaxTransactionTimeout and the margin, want 0", n)
	}
	if st := tp.Status(); st.InFlightByAPI[keyProduce] != 0 || st.InFlightByAPI[keyEndTxn] != 0 {
		t.Errorf("past the capped timeout: in flight %v, want nothing", st.InFlightByAPI)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch past the capped timeout: %v", err)
	}
}

// TestTxnProduceAcks0ClosesConnection: a transactional Produce with acks=0
// gets no answer, so the proxy could not learn whether it opened a
// transaction; it closes the connection instead of forwarding it, and
// nothing is counted open.
func TestTxnProduceAcks0ClosesConnection(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 1)
	topic := kafkatest.Topic(t, "txnacks0")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil)
	before := connErrorsByReason(t, tp.reg)
	c := dialWire(t, tp.Addr().String(), "acks0")
	c.send(txnProduce(9, 0, "acks0-tx", topic, 0, txnBatch(1, 0, 0, "x")))
	c.expectClosed()
	waitOneConnError(t, tp.reg, before, "rewrite_request")
	if n := tp.pids.txns.openCount(); n != 0 {
		t.Fatalf("%d transactions open", n)
	}
}

// TestTxnStartParkedBehindItsFirstAnswer: a transaction's first Produce is
// in flight when a switch starts; its second, on another connection, is
// parked as one that would start a transaction. When the first is answered
// — the transaction is open — the second is admitted as continuing it, so
// the transaction can end on the old cluster and the switch lands after it.
func TestTxnStartParkedBehindItsFirstAnswer(t *testing.T) {
	backend, target, topic := fakePairWithTopic(t, "txnpark", 2)
	relay := holdProducesOf(t, backend, "first")
	tp := startProxy(t, relay.cluster("source"), target, func(c *Config) { c.DrainTimeout = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	txnID := kafkatest.Topic(t, "tx")
	ctl := dialWire(t, tp.Addr().String(), "control")
	init := initTxnOnWire(t, ctl, txnID, 60000)
	if init.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v", kerr.ErrorForCode(init.ErrorCode))
	}
	pid, epoch := init.ProducerID, init.ProducerEpoch

	// Produce v12: the partition joins the transaction implicitly (KIP-890).
	first := dialWire(t, tp.Addr().String(), "first")
	req1 := txnProduce(12, -1, txnID, topic, 0, txnBatch(pid, epoch, 0, "a"))
	corr1 := first.send(req1)
	relay.waitHeld(t)

	switched := make(chan error, 1)
	go func() {
		_, err := tp.Switch(ctx, "target")
		switched <- err
	}()
	eventually(t, 10*time.Second, "switch draining", func() error {
		if !tp.Status().Switching {
			return errNotYet
		}
		return nil
	})
	second := dialWire(t, tp.Addr().String(), "second")
	req2 := txnProduce(12, -1, txnID, topic, 1, txnBatch(pid, epoch, 0, "b"))
	corr2 := second.send(req2)
	eventually(t, 10*time.Second, "second produce parked", func() error {
		if tp.Status().Held == 0 {
			return errNotYet
		}
		return nil
	})
	relay.releaseHeld()
	wantCode(t, "first produce", codes(t, first.recv(req1, corr1))[0], 0)
	wantCode(t, "second produce", codes(t, second.recv(req2, corr2))[1], 0)

	end := kmsg.NewPtrEndTxnRequest()
	end.Version, end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = 4, txnID, pid, epoch, true
	if resp := ctl.roundTrip(end).(*kmsg.EndTxnResponse); resp.ErrorCode != 0 {
		t.Fatalf("EndTxn: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	if err := <-switched; err != nil {
		t.Fatalf("switch: %v", err)
	}
	var got []string
	for _, r := range backend.ReadCommitted(ctx, t, topic) {
		got = append(got, string(r.Value))
	}
	sort.Strings(got)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("source holds %q committed, want a and b", got)
	}
}
