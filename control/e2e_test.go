package control_test

import (
	"context"
	"fmt"
	"strconv"
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

// acked is a record a producer had acknowledged.
type acked struct {
	key   string
	value string
	seq   int
}

// producer writes keyed records continuously through one sidecar and keeps
// what was acknowledged, per key in order.
type producer struct {
	id int
	cl *kgo.Client
	// pace, if not zero, spaces the records at least this far apart (a
	// rate its consumers can keep up with); zero writes as fast as they
	// are acknowledged.
	pace time.Duration
	mu   sync.Mutex
	ack  []acked
	err  error
}

func (p *producer) run(ctx context.Context, topic string) {
	var tick <-chan time.Time
	if p.pace > 0 {
		t := time.NewTicker(p.pace)
		defer t.Stop()
		tick = t.C
	}
	for seq := 0; ctx.Err() == nil; seq++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			}
		}
		key := fmt.Sprintf("p%d-k%d", p.id, seq%8)
		r := &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(fmt.Sprintf("p%d-%d", p.id, seq))}
		// Synchronous: the order per key is the order acknowledged.
		if err := p.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			if ctx.Err() == nil {
				p.mu.Lock()
				p.err = fmt.Errorf("produce p%d-%d: %w", p.id, seq, err)
				p.mu.Unlock()
			}
			return
		}
		p.mu.Lock()
		p.ack = append(p.ack, acked{key, string(r.Value), seq})
		p.mu.Unlock()
	}
}

func (p *producer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ack)
}

// TestCutoverEndToEnd runs a whole cutover under load: a control plane with
// a mirror, three producer sidecars writing keyed records continuously with
// franz-go's defaults (idempotent), and a consumer group of two members
// behind two more sidecars. The cutover is started through the API. After
// it, every acknowledged record is on the target exactly once, in order per
// key; the group resumed on the target exactly where it had committed on
// the source; and the producers' block window is reported.
func TestCutoverEndToEnd(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "orders")
	source.CreateTopic(t, topic, 6)
	group := kafkatest.Topic(t, "billing")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The control plane, with its mirror.
	const token = "e2e-token"
	plane, m := planetest.Start(t, source, target, token, topic)

	// Five sidecars following it.
	sidecar := func(instance, role string) string {
		return planetest.Sidecar(t, plane, token, "orders", instance, map[string]string{"role": role}, source, target).Addr().String()
	}
	var producers []*producer
	for i := range 3 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(sidecar(fmt.Sprintf("producer-%d", i), "producer")))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		producers = append(producers, &producer{id: i, cl: cl})
	}
	type consumed struct {
		partition int32
		offset    int64
		value     string
	}
	var (
		cmu      sync.Mutex
		received []consumed
		wg       sync.WaitGroup
	)
	sctx, stopConsumers := context.WithCancel(context.Background())
	defer func() { stopConsumers(); wg.Wait() }()
	for i := range 2 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(sidecar(fmt.Sprintf("consumer-%d", i), "consumer")),
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.AutoCommitInterval(100*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.WithLogger(kgo.BasicLogger(&tlogWriter{t: t, prefix: fmt.Sprintf("consumer-%d ", i)}, kgo.LogLevelInfo, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sctx.Err() == nil {
				fs := cl.PollFetches(sctx)
				fs.EachRecord(func(r *kgo.Record) {
					cmu.Lock()
					received = append(received, consumed{r.Partition, r.Offset, string(r.Value)})
					cmu.Unlock()
				})
			}
		}()
	}

	conn, err := grpc.NewClient(plane.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := switchyardv1.NewControlServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: timed out", what)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitUntil("five sidecars connected", func() bool {
		r, err := api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{App: "orders"})
		n := 0
		for _, s := range r.GetSidecars() {
			if s.GetConnected() {
				n++
			}
		}
		return err == nil && n == 5
	})

	// Production runs through the whole cutover.
	prodCtx, stopProducing := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	for _, p := range producers {
		pwg.Add(1)
		go func() { defer pwg.Done(); p.run(prodCtx, topic) }()
	}
	waitUntil("records before the cutover", func() bool { return producers[0].count() > 200 })

	resp, err := api.CreateCutover(authed, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}},
		Source:   "source", Target: "target", Topics: []string{topic}, Groups: []string{group},
		Policy: &switchyardv1.CutoverPolicy{GateMode: "HOLD", DrainTimeout: durationpb.New(60 * time.Second),
			HoldBudget: durationpb.New(30 * time.Second), MaxPreflightLag: 1_000_000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	final := followCutover(t, ctx, api, id)
	if final.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		t.Fatalf("cutover ended %s: %s", final.GetStep(), final.GetError())
	}
	at := map[string]int{}
	for _, p := range producers {
		at[strconv.Itoa(p.id)] = p.count()
	}
	waitUntil("records after the cutover", func() bool {
		for _, p := range producers {
			if p.count() < at[strconv.Itoa(p.id)]+200 {
				return false
			}
		}
		return true
	})
	stopProducing()
	pwg.Wait()
	total := 0
	for _, p := range producers {
		if p.err != nil {
			t.Errorf("producer %d: %v", p.id, p.err)
		}
		total += len(p.ack)
	}
	var hist []string
	for _, h := range final.GetHistory() {
		d := time.Duration(0)
		if h.GetFinished() != nil {
			d = h.GetFinished().AsTime().Sub(h.GetStarted().AsTime())
		}
		hist = append(hist, fmt.Sprintf("%s %v", strings.ToLower(strings.TrimPrefix(h.GetStep().String(), "CUTOVER_STEP_")), d.Round(time.Millisecond)))
	}
	t.Logf("cutover %s: %s; block window %v; %d records acknowledged", id, strings.Join(hist, ", "), final.GetBlockWindow().AsDuration(), total)
	if final.GetBlockWindow().AsDuration() <= 0 {
		t.Errorf("block window not measured")
	}

	// 1. Every acknowledged record on the target exactly once, in order
	// per key: the mirrored part followed by what was produced after.
	onTarget := readTopic(ctx, t, target, topic)
	seen := map[string]int{}
	lastSeq := map[string]int{}
	for _, r := range onTarget {
		seen[r.value]++
		var pid, seq int
		fmt.Sscanf(r.value, "p%d-%d", &pid, &seq)
		k := fmt.Sprintf("p%d-k%d", pid, seq%8)
		if last, ok := lastSeq[k]; ok && seq <= last {
			t.Errorf("key %s: %s after seq %d on the target", k, r.value, last)
		}
		lastSeq[k] = seq
	}
	for _, p := range producers {
		for _, a := range p.ack {
			if seen[a.value] != 1 {
				t.Errorf("acknowledged %s found %d times on the target", a.value, seen[a.value])
			}
		}
	}
	if len(onTarget) != total {
		t.Errorf("target holds %d records, %d were acknowledged", len(onTarget), total)
	}

	// 2. The group on the target resumed exactly: it consumed every record
	// once, none twice, and its offsets synced at the cutover equal the
	// translation of its final source offsets.
	waitUntil("the consumers read everything", func() bool {
		cmu.Lock()
		defer cmu.Unlock()
		distinct := map[string]bool{}
		for _, c := range received {
			distinct[c.value] = true
		}
		return len(distinct) >= total
	})
	cmu.Lock()
	counts := map[string]int{}
	where := map[string][]string{}
	for i, c := range received {
		counts[c.value]++
		where[c.value] = append(where[c.value], fmt.Sprintf("#%d p%d@%d", i, c.partition, c.offset))
	}
	cmu.Unlock()
	dups := 0
	for v, n := range counts {
		if n > 1 {
			dups++
			if dups <= 5 {
				t.Errorf("consumer group read %s %d times: %v", v, n, where[v])
			}
		}
	}
	for _, g := range final.GetGroupOffsets() {
		want, err := m.OffsetMap(g.GetTopic(), g.GetPartition()).Translate(g.GetSource())
		if err != nil || g.GetTarget() != want || g.GetSource() < 0 {
			t.Errorf("group offset %v: translation %d (%v)", g, want, err)
		}
	}
	if len(final.GetGroupOffsets()) != 6 {
		t.Errorf("%d group partitions synced, want 6", len(final.GetGroupOffsets()))
	}
	t.Logf("consumer group: %d records read, %d distinct, %d twice", len(received), len(counts), dups)
	if dups > 0 {
		for _, g := range final.GetGroupOffsets() {
			t.Logf("synced %s/%d: source %d -> target %d (%s)", g.GetTopic(), g.GetPartition(), g.GetSource(), g.GetTarget(), g.GetOutcome())
		}
	}
}

type rec struct {
	partition int32
	offset    int64
	value     string
}

// readTopic reads every committed record of a topic, ordered by partition
// and offset.
func readTopic(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) []rec {
	t.Helper()
	var out []rec
	for _, r := range c.ReadCommitted(ctx, t, topic) {
		out = append(out, rec{r.Partition, r.Offset, string(r.Value)})
	}
	return out
}

type tlogWriter struct {
	t      *testing.T
	prefix string
}

func (w *tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimSpace(string(b)))
	return len(b), nil
}
