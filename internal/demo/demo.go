// Package demo runs Switchyard's self-contained demonstration of a whole
// migration: two in-process Kafka clusters (kfake), a control plane with
// its mirror, two producer sidecars and a consumer-group sidecar, each
// application talking only to its sidecar. A cutover is started through
// the control plane's API mid-stream and followed live; a verification
// table then proves what happened: every acknowledged record on the target
// exactly once, in order per key, and the consumer group resumed exactly
// where it left off.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// Config sizes the demo.
type Config struct {
	// RecordsPerPhase is what each producer writes before the cutover
	// starts, and again after it is done.
	RecordsPerPhase int
}

const (
	topic      = "orders"
	group      = "billing"
	app        = "shop"     // the producers' application
	groupApp   = "invoices" // the consumer group's
	partitions = 3
	token      = "demo-token"
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

	pr("Switchyard demo: a whole cutover through the control plane, on two in-process Kafka clusters.")
	pr("")
	source, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.ClusterID("demo-source"), kfake.SeedTopics(partitions, topic))
	if err != nil {
		return fmt.Errorf("start source cluster: %w", err)
	}
	defer source.Close()
	target, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.ClusterID("demo-target"))
	if err != nil {
		return fmt.Errorf("start target cluster: %w", err)
	}
	defer target.Close()
	pr("  source         3 brokers at %s", strings.Join(source.ListenAddrs(), ", "))
	pr("  target         2 brokers at %s (empty: the mirror creates the topic)", strings.Join(target.ListenAddrs(), ", "))

	// The control plane, running the mirror; its store in a directory
	// removed at the end.
	storeDir, err := os.MkdirTemp("", "switchyard-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(storeDir)
	mc := mirror.DefaultConfig()
	mc.Name = "orders"
	mc.Topics = topics.Policy{Include: []string{topic}}
	mc.TxnMaxInterval = 100 * time.Millisecond
	mc.TopicSyncInterval = time.Second
	plane, err := control.NewPlane(ctx, control.PlaneConfig{
		Server:   control.ServerConfig{Listen: "127.0.0.1:0", Token: token},
		StoreDir: storeDir,
		Clusters: []*switchyardv1.Cluster{{Name: "source", Bootstrap: source.ListenAddrs()}, {Name: "target", Bootstrap: target.ListenAddrs()}},
		Mirrors:  []control.PlaneMirror{{Source: "source", Target: "target", Config: mc}},
	}, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	var wg sync.WaitGroup
	bg, stopAll := context.WithCancel(context.Background())
	defer func() { stopAll(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); _ = plane.Run(bg) }()
	pr("  control plane  %s (gRPC and REST), mirror %q copying %s: source -> target", plane.Addr(), mc.Name, topic)

	// The sidecars, following the control plane.
	sidecar := func(instance, role string) (string, error) {
		pc := proxy.DefaultConfig()
		pc.Listen, pc.BrokerPortBase, pc.Active = "127.0.0.1:0", -1, "source"
		pc.Clusters = []proxy.ClusterConfig{{Name: "source", Bootstrap: source.ListenAddrs()}, {Name: "target", Bootstrap: target.ListenAddrs()}}
		reg := prometheus.NewRegistry()
		p, err := proxy.New(pc, zap.NewNop(), reg)
		if err != nil {
			return "", err
		}
		cc := controlclient.DefaultConfig()
		cc.Address, cc.App, cc.Instance, cc.Token = plane.Addr().String(), app, instance, token
		if role == "consumer" {
			cc.App = groupApp
		}
		cc.Labels = map[string]string{"role": role}
		cc.StatusInterval = 100 * time.Millisecond
		client, err := controlclient.New(cc, p, reg, zap.NewNop())
		if err != nil {
			return "", err
		}
		wg.Add(2)
		go func() { defer wg.Done(); _ = p.Run(bg) }()
		go func() { defer wg.Done(); _ = client.Run(bg) }()
		if err := poll(ctx, p.Ready); err != nil {
			return "", err
		}
		return p.Addr().String(), nil
	}
	var producers []*producer
	for i := 1; i <= 2; i++ {
		addr, err := sidecar(fmt.Sprintf("producer-%d", i), "producer")
		if err != nil {
			return err
		}
		// Default settings: idempotent. The application knows only its
		// sidecar's address.
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic))
		if err != nil {
			return err
		}
		defer cl.Close()
		producers = append(producers, &producer{id: i, cl: cl})
		pr("  sidecar        producer-%d at %s", i, addr)
	}
	caddr, err := sidecar("consumer-1", "consumer")
	if err != nil {
		return err
	}
	pr("  sidecar        consumer-1 at %s (consumer group %q)", caddr, group)
	consumer, err := kgo.NewClient(kgo.SeedBrokers(caddr), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.AutoCommitInterval(100*time.Millisecond), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer consumer.Close()
	seen := newSeen()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for bg.Err() == nil {
			consumer.PollFetches(bg).EachRecord(seen.add)
		}
	}()

	conn, err := grpc.NewClient(plane.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	api := switchyardv1.NewControlServiceClient(conn)
	if err := poll(ctx, func() error {
		r, err := api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{})
		if err != nil {
			return err
		}
		n := 0
		for _, s := range r.GetSidecars() {
			if s.GetConnected() && s.GetStatus() != nil {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d of 3 sidecars connected", n)
		}
		return nil
	}); err != nil {
		return err
	}
	pr("")

	// 1. Production starts and runs through the whole cutover.
	prodCtx, stopProducing := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	for _, p := range producers {
		pwg.Add(1)
		go func() { defer pwg.Done(); p.run(prodCtx) }()
	}
	defer func() { stopProducing(); pwg.Wait() }()
	if err := poll(ctx, func() error { return atLeast(producers, cfg.RecordsPerPhase) }); err != nil {
		return err
	}
	pr("1. The producers write continuously through their sidecars (%d records acknowledged by the source so far);", total(producers))
	pr("   the consumer group reads through its sidecar.")
	pr("")

	// 2. The cutover, through the API, followed live.
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := api.CreateCutover(authed, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{app, groupApp}},
		Source:   "source", Target: "target", Topics: []string{topic}, Groups: []string{group},
		Policy: &switchyardv1.CutoverPolicy{GateMode: "HOLD", DrainTimeout: durationpb.New(30 * time.Second), MaxPreflightLag: 1 << 40},
	}})
	if err != nil {
		return fmt.Errorf("start the cutover: %w", err)
	}
	id := resp.GetCutover().GetId()
	pr("2. Cutover %s started through the API (the same call as `switchyard ctl cutover start --app %s,%s --from source --to target --groups %s`):",
		id, app, groupApp, group)
	final, err := follow(ctx, api, id, pr)
	if err != nil {
		return err
	}
	if final.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		return fmt.Errorf("cutover ended %s: %s", final.GetStep(), final.GetError())
	}
	pr("   producers blocked for %v (gate to release); group %q synced exactly:", final.GetBlockWindow().AsDuration().Round(time.Millisecond), group)
	for _, g := range final.GetGroupOffsets() {
		pr("     %s/%d  source offset %d -> target offset %d", g.GetTopic(), g.GetPartition(), g.GetSource(), g.GetTarget())
	}
	pr("")

	// 3. Production goes on, on the target, through the same addresses.
	before := total(producers)
	if err := poll(ctx, func() error { return atLeast(producers, 2*cfg.RecordsPerPhase) }); err != nil {
		return err
	}
	stopProducing()
	pwg.Wait()
	for _, p := range producers {
		if p.err != nil {
			return p.err
		}
	}
	acked := total(producers)
	pr("3. The producers went on through the same sidecar addresses, now to the target: %d more records.", acked-before)
	if err := poll(ctx, func() error {
		if n := seen.distinct(); n < acked {
			return fmt.Errorf("consumer read %d of %d", n, acked)
		}
		return nil
	}); err != nil {
		return err
	}
	pr("")
	return verify(ctx, pr, out, source, target, producers, seen, acked)
}

// follow prints the cutover's steps as they happen and returns its end.
func follow(ctx context.Context, api switchyardv1.ControlServiceClient, id string, pr func(string, ...any)) (*switchyardv1.Cutover, error) {
	w, err := api.WatchCutover(ctx, &switchyardv1.WatchCutoverRequest{Id: id})
	if err != nil {
		return nil, err
	}
	var last *switchyardv1.Cutover
	printed := 0
	for {
		m, err := w.Recv()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return last, fmt.Errorf("watch cutover: %w", err)
		}
		last = m.GetCutover()
		// Print every step that finished since the last message.
		for ; printed < len(last.GetHistory()); printed++ {
			h := last.GetHistory()[printed]
			if h.GetFinished() == nil {
				break
			}
			step := control.StepName(h.GetStep())
			d := h.GetFinished().AsTime().Sub(h.GetStarted().AsTime()).Round(time.Millisecond)
			pr("   ✓ %-12s %8v  %s", step, d, h.GetDetail())
		}
	}
}

// verify reads both clusters and prints the verification table.
func verify(ctx context.Context, pr func(string, ...any), out io.Writer, source, target *kfake.Cluster, producers []*producer, seen *seen, acked int) error {
	src, err := readTopic(ctx, source.ListenAddrs())
	if err != nil {
		return err
	}
	dst, err := readTopic(ctx, target.ListenAddrs())
	if err != nil {
		return err
	}
	ackedSet := map[string]bool{}
	for _, p := range producers {
		for _, v := range p.acked {
			ackedSet[v] = true
		}
	}
	pr("Verification (read back from both clusters):")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  partition\ton source\ton target\tmirrored\tproduced after\tduplicated\tout of order\t")
	var lost, dups, disorder, onTarget int
	for p := int32(0); p < partitions; p++ {
		srcSet := map[string]bool{}
		for _, v := range src[p] {
			srcSet[v] = true
		}
		counts := map[string]int{}
		last := map[string]int{}
		mirrored, after, pd, po := 0, 0, 0, 0
		for _, v := range dst[p] {
			counts[v]++
			if counts[v] == 2 {
				pd++
			}
			if srcSet[v] {
				mirrored++
			} else {
				after++
			}
			var prod, seq int
			fmt.Sscanf(v, "p%d-%d", &prod, &seq)
			key := fmt.Sprintf("p%d-k%d", prod, seq%8)
			if l, ok := last[key]; ok && seq <= l {
				po++
			}
			last[key] = seq
		}
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p, len(src[p]), len(dst[p]), mirrored, after, pd, po)
		dups += pd
		disorder += po
		onTarget += len(dst[p])
	}
	all := map[string]bool{}
	for _, vs := range dst {
		for _, v := range vs {
			all[v] = true
		}
	}
	for v := range ackedSet {
		if !all[v] {
			lost++
		}
	}
	tw.Flush()
	pr("  acknowledged %d records; on the target %d; %d lost, %d duplicated, %d out of order per key.", acked, onTarget, lost, dups, disorder)
	read, distinct, twice := seen.stats()
	pr("  consumer group %q read %d records: %d distinct, %d delivered twice.", group, read, distinct, twice)
	pr("The applications kept their one bootstrap address each and were never restarted.")
	if lost != 0 || dups != 0 || disorder != 0 || onTarget != acked || twice != 0 || distinct != acked {
		return fmt.Errorf("demo checks failed: %d lost, %d duplicated, %d out of order, %d on target of %d acknowledged; consumer: %d distinct, %d twice",
			lost, dups, disorder, onTarget, acked, distinct, twice)
	}
	return nil
}

// producer writes keyed records through one sidecar, one at a time so the
// acknowledged order per key is the produced order.
type producer struct {
	id    int
	cl    *kgo.Client
	mu    sync.Mutex
	acked []string
	err   error
}

func (p *producer) run(ctx context.Context) {
	for seq := 0; ctx.Err() == nil; seq++ {
		v := fmt.Sprintf("p%d-%d", p.id, seq)
		r := &kgo.Record{Key: []byte(fmt.Sprintf("p%d-k%d", p.id, seq%8)), Value: []byte(v)}
		if err := p.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			if ctx.Err() == nil {
				p.mu.Lock()
				p.err = fmt.Errorf("producer %d: %w", p.id, err)
				p.mu.Unlock()
			}
			return
		}
		p.mu.Lock()
		p.acked = append(p.acked, v)
		p.mu.Unlock()
	}
}

func (p *producer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func total(ps []*producer) int {
	n := 0
	for _, p := range ps {
		n += p.count()
	}
	return n
}

func atLeast(ps []*producer, n int) error {
	for _, p := range ps {
		if c := p.count(); c < n {
			return fmt.Errorf("producer %d acknowledged %d of %d", p.id, c, n)
		}
	}
	return nil
}

// seen counts what the consumer group read.
type seen struct {
	mu    sync.Mutex
	count map[string]int
	read  int
}

func newSeen() *seen { return &seen{count: map[string]int{}} }

func (s *seen) add(r *kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count[string(r.Value)]++
	s.read++
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count)
}

func (s *seen) stats() (read, distinct, twice int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.count {
		if n > 1 {
			twice++
		}
	}
	return s.read, len(s.count), twice
}

// readTopic reads every committed record of the topic, per partition in
// offset order. Control records are read too, so the reader knows when it
// passed the end.
func readTopic(ctx context.Context, addrs []string) (map[int32][]string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var ends kadm.ListedOffsets
	if err := poll(ctx, func() error {
		committed, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return err
		}
		hw, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return err
		}
		var pending error
		hw.Each(func(o kadm.ListedOffset) {
			if c, ok := committed.Lookup(o.Topic, o.Partition); !ok || c.Offset != o.Offset {
				pending = fmt.Errorf("transactions pending on %s/%d", o.Topic, o.Partition)
			}
		})
		ends = committed
		return pending
	}); err != nil {
		return nil, err
	}
	next := map[int32]int64{}
	out := map[int32][]string{}
	type rec struct {
		off int64
		v   string
	}
	recs := map[int32][]rec{}
	for {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if next[o.Partition] < o.Offset {
				done = false
			}
		})
		if done {
			break
		}
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				recs[r.Partition] = append(recs[r.Partition], rec{r.Offset, string(r.Value)})
			}
		})
	}
	for p, rs := range recs {
		sort.Slice(rs, func(i, j int) bool { return rs[i].off < rs[j].off })
		for _, r := range rs {
			out[p] = append(out[p], r.v)
		}
	}
	return out, nil
}

func poll(ctx context.Context, f func() error) error {
	t := time.NewTicker(10 * time.Millisecond)
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
