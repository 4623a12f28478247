package control_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/planetest"
)

// txnBed is a control plane with a mirror of one topic and one sidecar.
type txnBed struct {
	source, target *kafkatest.Cluster
	topic          string
	sidecar        string // the sidecar's bootstrap address
	api            switchyardv1.ControlServiceClient
	authed         context.Context
}

func startTxnBed(t *testing.T, ctx context.Context) *txnBed {
	t.Helper()
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "ledger")
	source.CreateTopic(t, topic, 3)
	const token = "txn-token"
	plane, _ := planetest.Start(t, source, target, token, topic)

	h := planetest.Sidecar(t, plane, token, "ledger", "producer-0", nil, source, target)

	conn, err := grpc.NewClient(plane.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b := &txnBed{source: source, target: target, topic: topic, sidecar: h.Addr().String(),
		api:    switchyardv1.NewControlServiceClient(conn),
		authed: metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)}
	b.waitUntil(t, ctx, "the sidecar connected", func() bool {
		r, err := b.api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{App: "ledger"})
		return err == nil && len(r.GetSidecars()) == 1 && r.GetSidecars()[0].GetConnected()
	})
	b.waitUntil(t, ctx, "the mirror ready", func() bool {
		r, err := b.api.ListMirrors(ctx, &switchyardv1.ListMirrorsRequest{})
		return err == nil && len(r.GetMirrors()) == 1 && r.GetMirrors()[0].GetReady()
	})
	return b
}

func (b *txnBed) waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, ctx, what, cond)
}

// waitUntil polls cond every 20 ms until it holds, failing the test when
// ctx ends first.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: timed out", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cutover runs a cutover of the bed's application and returns its final
// state.
func (b *txnBed) cutover(t *testing.T, ctx context.Context, policy *switchyardv1.CutoverPolicy) *switchyardv1.Cutover {
	t.Helper()
	resp, err := b.api.CreateCutover(b.authed, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"ledger"}},
		Source:   "source", Target: "target", Topics: []string{b.topic}, Policy: policy,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return followCutover(t, ctx, b.api, resp.GetCutover().GetId())
}

// txnLoop runs transactions through one transactional client (never
// re-created): six keyed records each, every fourth aborted.
type txnLoop struct {
	cl    *kgo.Client
	topic string

	mu        sync.Mutex
	n         int
	committed map[string]int // value → transaction
	aborted   map[string]bool
}

func (l *txnLoop) begin(ctx context.Context) (int, []string, error) {
	l.mu.Lock()
	n := l.n
	l.n++
	l.mu.Unlock()
	if err := l.cl.BeginTransaction(); err != nil {
		return n, nil, fmt.Errorf("begin transaction %d: %w", n, err)
	}
	var values []string
	var rs []*kgo.Record
	for i := range 6 {
		v := fmt.Sprintf("t%d-%d", n, i)
		values = append(values, v)
		rs = append(rs, &kgo.Record{Topic: l.topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(v)})
	}
	if err := l.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return n, nil, fmt.Errorf("transaction %d: produce: %w", n, err)
	}
	return n, values, nil
}

func (l *txnLoop) end(ctx context.Context, n int, values []string, commit bool) error {
	if err := l.cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return fmt.Errorf("end transaction %d (commit %v): %w", n, commit, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range values {
		if commit {
			l.committed[v] = n
		} else {
			l.aborted[v] = true
		}
	}
	return nil
}

func (l *txnLoop) ended() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return (len(l.committed) + len(l.aborted)) / 6
}

// TestCutoverTransactionalProducer runs a transactional producer
// continuously through a sidecar while the control plane cuts its
// application over (HOLD gate). The producer is never re-created and sees
// no error; afterwards a read_committed consumer of the target sees every
// committed record exactly once — those the mirror copied and those
// written on the target after the flip — no aborted record, and per key
// the transactions in order.
func TestCutoverTransactionalProducer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := startTxnBed(t, ctx)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.sidecar), kgo.TransactionalID(kafkatest.Topic(t, "ledger-tx")),
		kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	l := &txnLoop{cl: cl, topic: b.topic, committed: map[string]int{}, aborted: map[string]bool{}}
	prodCtx, stopProducing := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		for prodCtx.Err() == nil {
			n, values, err := l.begin(ctx)
			if err == nil {
				err = l.end(ctx, n, values, n%4 != 3)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	b.waitUntil(t, ctx, "transactions before the cutover", func() bool { return l.ended() >= 10 })

	final := b.cutover(t, ctx, &switchyardv1.CutoverPolicy{GateMode: "HOLD", DrainTimeout: durationpb.New(60 * time.Second),
		HoldBudget: durationpb.New(30 * time.Second), MaxPreflightLag: 1_000_000})
	if final.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		stopProducing()
		t.Fatalf("cutover ended %s: %s", final.GetStep(), final.GetError())
	}
	at := l.ended()
	b.waitUntil(t, ctx, "transactions after the cutover", func() bool { return l.ended() >= at+10 })
	stopProducing()
	if err := <-errc; err != nil {
		t.Fatalf("producer: %v", err)
	}

	onTarget := readTopic(ctx, t, b.target, b.topic)
	count := map[string]int{}
	last := map[string]int{} // partition/key → transaction
	for _, r := range onTarget {
		count[r.value]++
		n, ok := l.committed[r.value]
		if !ok {
			t.Errorf("target holds %s, which no committed transaction wrote (aborted: %v)", r.value, l.aborted[r.value])
			continue
		}
		k := fmt.Sprintf("%d/%s", r.partition, r.value[strings.IndexByte(r.value, '-')+1:])
		if p, ok := last[k]; ok && n <= p {
			t.Errorf("partition %d: %s after transaction %d", r.partition, r.value, p)
		}
		last[k] = n
	}
	for v := range l.committed {
		if count[v] != 1 {
			t.Errorf("committed %s found %d times on the target", v, count[v])
		}
	}
	t.Logf("%d transactions, %d committed records on the target; block window %v",
		l.n, len(onTarget), final.GetBlockWindow().AsDuration())
}

// TestCutoverAbortsOnOpenTransaction: a transaction that stays open past
// the drain timeout makes the cutover roll back with a reason that names
// open transactions; the sidecar is back on the source with no gate, and
// the transaction then commits there.
func TestCutoverAbortsOnOpenTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := startTxnBed(t, ctx)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.sidecar), kgo.TransactionalID(kafkatest.Topic(t, "ledger-tx")))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	l := &txnLoop{cl: cl, topic: b.topic, committed: map[string]int{}, aborted: map[string]bool{}}
	n, values, err := l.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	final := b.cutover(t, ctx, &switchyardv1.CutoverPolicy{GateMode: "HOLD", DrainTimeout: durationpb.New(2 * time.Second),
		HoldBudget: durationpb.New(10 * time.Second), MaxPreflightLag: 1_000_000})
	if final.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK || !strings.Contains(final.GetError(), "1 transaction still open") {
		t.Fatalf("cutover ended %s (%q), want rolled back naming the open transaction", final.GetStep(), final.GetError())
	}
	t.Logf("cutover rolled back: %s", final.GetError())
	b.waitUntil(t, ctx, "the sidecar back on the source without a gate", func() bool {
		r, err := b.api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{App: "ledger"})
		if err != nil || len(r.GetSidecars()) != 1 {
			return false
		}
		st := r.GetSidecars()[0].GetStatus()
		return st.GetActiveCluster() == "source" && st.GetGate() == nil
	})
	if err := l.end(ctx, n, values, true); err != nil {
		t.Fatalf("the transaction could not finish on the source: %v", err)
	}
	onSource := readTopic(ctx, t, b.source, b.topic)
	got := map[string]bool{}
	for _, r := range onSource {
		got[r.value] = true
	}
	for _, v := range values {
		if !got[v] {
			t.Errorf("committed %s missing on the source", v)
		}
	}
	if len(onSource) != len(values) {
		t.Errorf("source holds %d records, want %d", len(onSource), len(values))
	}
}
