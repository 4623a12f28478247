// Package demo runs Switchyard's self-contained demonstration: two
// in-process Kafka clusters (kfake), a proxy in front of them, a producer
// and a consumer group talking only to the proxy, and a switch from one
// cluster to the other in the middle of the stream. It prints what happened
// and checks it: every record acknowledged, none lost, order kept.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/proxy"
)

// Config sizes the demo.
type Config struct {
	// RecordsPerPhase is produced before the switch, and again after it.
	RecordsPerPhase int
}

const (
	topic      = "orders"
	group      = "billing"
	partitions = 3
)

// Run runs the demo, printing to out. It returns an error if any check
// fails.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.RecordsPerPhase <= 0 {
		return errors.New("demo: records per phase must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pr := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	pr("Switchyard demo: two in-process Kafka clusters, one proxy, a producer and a consumer group.")
	pr("")
	source, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("demo-source"), kfake.SeedTopics(partitions, topic))
	if err != nil {
		return fmt.Errorf("start source cluster: %w", err)
	}
	defer source.Close()
	target, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ClusterID("demo-target"), kfake.SeedTopics(partitions, topic))
	if err != nil {
		return fmt.Errorf("start target cluster: %w", err)
	}
	defer target.Close()
	pr("  source  3 brokers at %s", strings.Join(source.ListenAddrs(), ", "))
	pr("  target  2 brokers at %s", strings.Join(target.ListenAddrs(), ", "))

	pcfg := proxy.DefaultConfig()
	pcfg.Listen = "127.0.0.1:0"
	pcfg.BrokerPortBase = -1
	pcfg.Clusters = []proxy.ClusterConfig{
		{Name: "source", Bootstrap: source.ListenAddrs()},
		{Name: "target", Bootstrap: target.ListenAddrs()},
	}
	pcfg.Active = "source"
	p, err := proxy.New(pcfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	pctx, stopProxy := context.WithCancel(ctx)
	var proxyWG sync.WaitGroup
	proxyWG.Add(1)
	go func() { defer proxyWG.Done(); _ = p.Run(pctx) }()
	defer func() { stopProxy(); proxyWG.Wait() }()
	if err := waitReady(ctx, p); err != nil {
		return err
	}
	bootstrap := p.Addr().String()

	// The mirror copies the topic from the start, transactionally, with an
	// exact offset map.
	mcfg := mirror.DefaultConfig()
	mcfg.Name = "demo"
	mcfg.SourceBootstrap, mcfg.TargetBootstrap = source.ListenAddrs(), target.ListenAddrs()
	mcfg.Topics = topics.Policy{Include: []string{topic}}
	mcfg.TxnMaxInterval = 100 * time.Millisecond
	mr, err := mirror.New(mcfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	mctx, stopMirror := context.WithCancel(ctx)
	var mirrorWG sync.WaitGroup
	mirrorWG.Add(1)
	go func() { defer mirrorWG.Done(); _ = mr.Run(mctx) }()
	defer func() { stopMirror(); mirrorWG.Wait() }()
	pr("  proxy   bootstrap %s, virtual brokers %s, cluster id %s", bootstrap, strings.Join(p.BrokerAddrs(), ", "), p.ClusterID())
	pr("")

	// The clients know only the proxy and run with default settings: the
	// producer is idempotent, and the proxy carries its producer id over to
	// the target cluster.
	producer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer producer.Close()
	consumer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.AutoCommitInterval(200*time.Millisecond))
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer consumer.Close()
	tally := newTally()
	cctx, stopConsumer := context.WithCancel(ctx)
	var consWG sync.WaitGroup
	consWG.Add(1)
	go func() {
		defer consWG.Done()
		for cctx.Err() == nil {
			fs := consumer.PollFetches(cctx)
			fs.EachRecord(tally.add)
		}
	}()
	defer func() { stopConsumer(); consWG.Wait() }()

	n := cfg.RecordsPerPhase
	if err := produce(ctx, producer, 0, n); err != nil {
		return err
	}
	pr("1. produced %d records through the proxy (all acknowledged by the source)", n)
	if err := tally.waitFor(ctx, n); err != nil {
		return err
	}
	pr("   consumer group %q consumed %d", group, tally.distinctCount())
	pr("")

	pr("2. cutover: gate Produce (HOLD) -> drain -> mirror catches up -> sync group offsets -> switch -> release")
	if err := p.SetGate(proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold}); err != nil {
		return err
	}
	if err := waitProduceDrained(ctx, p); err != nil {
		return err
	}
	// The consumer has read everything; wait for its auto-commit so the
	// offsets synced are its real position (the control plane will drain
	// groups the same way).
	if err := waitCommitted(ctx, source.ListenAddrs()); err != nil {
		return err
	}
	if err := poll(ctx, func() error {
		ok, behind, err := mr.CaughtUp(ctx, topic)
		if err == nil && !ok {
			err = fmt.Errorf("mirror behind on %s", behind)
		}
		return err
	}); err != nil {
		return err
	}
	gs, err := mr.SyncGroups(ctx, []string{group})
	if err == nil {
		err = gs.Err()
	}
	if err != nil {
		return fmt.Errorf("sync group offsets: %w", err)
	}
	copied := 0
	for part := int32(0); part < partitions; part++ {
		for _, r := range mr.OffsetMap(topic, part).Ranges() {
			copied += int(r.Len)
		}
	}
	pr("   the mirror copied %d records (in transactions, offset map kept); group offsets translated exactly:", copied)
	for _, po := range gs.Groups[0].Partitions {
		pr("     %s/%d: source offset %d -> target offset %d", po.Topic, po.Partition, po.Source, po.Target)
	}
	rep, err := p.Switch(ctx, "target")
	if err != nil {
		return err
	}
	p.ClearGate()
	pr("   switch applied in %v: %d requests drained, %d long-poll fetches answered early, %d connections closed",
		rep.Duration().Round(time.Microsecond), rep.Drained, rep.FetchesAnsweredEarly, rep.ConnectionsClosed)
	pr("")

	if err := produce(ctx, producer, n, n); err != nil {
		return err
	}
	pr("3. produced %d more records through the same proxy address (acknowledged by the target)", n)
	if err := tally.waitFor(ctx, 2*n); err != nil {
		return err
	}
	stopConsumer()
	consWG.Wait()
	pr("")

	onSource, err := countRecords(ctx, source.ListenAddrs())
	if err != nil {
		return err
	}
	onTarget, err := countRecords(ctx, target.ListenAddrs())
	if err != nil {
		return err
	}
	lost, dups, reordered := tally.check(2 * n)
	pr("Where the records landed:")
	pr("  source  %6d records (phase 1)", onSource)
	pr("  target  %6d records (%d mirrored + %d produced after the switch)", onTarget, copied, onTarget-int64(copied))
	pr("Consumer: %d distinct records, %d lost, %d delivered twice, %d out of order", tally.distinctCount(), lost, dups, reordered)
	pr("The producer and the consumer kept one bootstrap address and were never restarted.")
	if lost != 0 || reordered != 0 || onTarget != int64(2*n) || onSource != int64(n) {
		return fmt.Errorf("demo checks failed: lost %d, out of order %d, source %d (want %d), target %d (want %d)",
			lost, reordered, onSource, n, onTarget, 2*n)
	}
	return nil
}

func waitReady(ctx context.Context, p *proxy.Proxy) error {
	return poll(ctx, func() error { return p.Ready() })
}

func waitProduceDrained(ctx context.Context, p *proxy.Proxy) error {
	return poll(ctx, func() error {
		if n := p.Status().InFlightByAPI[0]; n > 0 {
			return fmt.Errorf("%d produce requests in flight", n)
		}
		return nil
	})
}

func poll(ctx context.Context, f func() error) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// waitCommitted waits until the group's committed offsets reach the end of
// every partition.
func waitCommitted(ctx context.Context, addrs []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	return poll(ctx, func() error {
		lag, err := adm.Lag(ctx, group)
		if err != nil {
			return err
		}
		if l := lag[group]; l.FetchErr != nil || l.DescribeErr != nil || l.Lag.Total() != 0 || len(l.Lag) == 0 {
			return fmt.Errorf("group %s lag %d", group, l.Lag.Total())
		}
		return nil
	})
}

func produce(ctx context.Context, cl *kgo.Client, from, n int) error {
	rs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		rs = append(rs, &kgo.Record{Key: []byte(fmt.Sprintf("customer-%d", i%24)), Value: []byte(fmt.Sprintf("%d", i))})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

// countRecords counts the records present in the topic by reading them
// (read_committed): end offsets would also count transaction markers.
func countRecords(ctx context.Context, addrs []string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("end offsets: %w", err)
	}
	var total int64
	last := map[int32]int64{}
	caughtUp := func() bool {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			// The last record is at end-1, or end-2 before a commit marker.
			if l, ok := last[o.Partition]; o.Offset > 0 && (!ok || l < o.Offset-2) {
				done = false
			}
		})
		return done
	}
	for !caughtUp() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("count records: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			total++
			last[r.Partition] = r.Offset
		})
	}
	return total, nil
}

// tally records what the consumer saw.
type tally struct {
	mu       sync.Mutex
	count    map[int]int
	lastSeq  map[string]int // partition/key → last sequence seen
	disorder int
	changed  chan struct{}
}

func newTally() *tally {
	return &tally{count: map[int]int{}, lastSeq: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (t *tally) add(r *kgo.Record) {
	var seq int
	fmt.Sscanf(string(r.Value), "%d", &seq)
	t.mu.Lock()
	t.count[seq]++
	k := fmt.Sprintf("%d/%s", r.Partition, r.Key)
	if prev, ok := t.lastSeq[k]; ok && seq <= prev && t.count[seq] == 1 {
		t.disorder++
	}
	t.lastSeq[k] = max(seq, t.lastSeq[k])
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

func (t *tally) distinctCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.count)
}

func (t *tally) waitFor(ctx context.Context, n int) error {
	for t.distinctCount() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("consumer saw %d of %d records: %w", t.distinctCount(), n, ctx.Err())
		case <-t.changed:
		}
	}
	return nil
}

func (t *tally) check(n int) (lost, dups, reordered int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < n; i++ {
		switch c := t.count[i]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1

		}
	}
	return lost, dups, t.disorder
}
