package proxy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestProduceConsumeThroughProxy(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "basic")
	source.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Metadata seen through the proxy names only proxy addresses and the
	// virtual cluster id.
	cl := tp.client(t)
	req := kmsg.NewPtrMetadataRequest()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if len(resp.Brokers) != 3 {
		t.Fatalf("metadata brokers: got %d, want 3", len(resp.Brokers))
	}
	for _, b := range resp.Brokers {
		if !tp.isLocal(b.Host, b.Port) {
			t.Errorf("broker %d at %s:%d is not a proxy listener", b.NodeID, b.Host, b.Port)
		}
	}
	if resp.ClusterID == nil || *resp.ClusterID != tp.ClusterID() {
		t.Errorf("cluster id: got %v, want %s", resp.ClusterID, tp.ClusterID())
	}

	const n = 3000
	produceN(ctx, t, tp.client(t), topic, 0, n)
	got := consumeN(ctx, t, tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup("g-basic")), n)
	checkRecords(t, got, 0, n)
}

// produceN produces records seq [from, from+n) keyed by seq%16, and fails
// the test on any delivery error.
func produceN(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	rs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		rs = append(rs, &kgo.Record{
			Topic:   topic,
			Key:     []byte(fmt.Sprintf("k-%d", i%16)),
			Value:   []byte(fmt.Sprintf("%d", i)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprintf("%d", i))}},
		})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

type seen struct {
	partition int32
	offset    int64
	key       string
	seq       int
}

// consumeN polls until n distinct sequence numbers were seen.
func consumeN(ctx context.Context, t *testing.T, cl *kgo.Client, n int) []seen {
	t.Helper()
	var out []seen
	distinct := map[int]bool{}
	groupNotices := 0
	for len(distinct) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consume: %d of %d records after timeout", len(distinct), n)
		}
		fs.EachError(func(topic string, p int32, err error) {
			// After a switch a group member's heartbeat is answered
			// UNKNOWN_MEMBER_ID (members.go) and franz-go hands that to
			// the poll once, as a notice, before it rejoins by itself.
			var notice *kgo.ErrGroupSession
			if errors.As(err, &notice) && errors.Is(err, kerr.UnknownMemberID) && groupNotices == 0 {
				groupNotices++
				return
			}
			t.Errorf("fetch error %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			var seq int
			fmt.Sscanf(string(r.Value), "%d", &seq)
			out = append(out, seen{r.Partition, r.Offset, string(r.Key), seq})
			distinct[seq] = true
		})
	}
	return out
}

// checkRecords asserts every seq in [from, to) was seen, nothing else was,
// and per key the sequence never goes backwards within a partition.
func checkRecords(t *testing.T, got []seen, from, to int) {
	t.Helper()
	count := map[int]int{}
	last := map[string]int{}
	for _, s := range got {
		count[s.seq]++
		if s.seq < from || s.seq >= to {
			t.Errorf("unexpected record seq %d", s.seq)
		}
		k := fmt.Sprintf("%d/%s", s.partition, s.key)
		if prev, ok := last[k]; ok && s.seq <= prev && count[s.seq] == 1 {
			t.Errorf("partition %d key %s: seq %d after %d", s.partition, s.key, s.seq, prev)
		}
		last[k] = s.seq
	}
	for i := from; i < to; i++ {
		if count[i] == 0 {
			t.Errorf("record seq %d lost", i)
		}
	}
}

// TestRunStopIsBounded: Run returns within StopTimeout of its context's
// end even when a connection goroutine does not (issue 14: a proxy burning
// CPU on a hostile request did not stop on SIGTERM for over 10 s). A
// goroutine that never finishes is stood in for by a WaitGroup count that
// is released only after Run returned.
func TestRunStopIsBounded(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: source.Bootstrap}}
	cfg.Active = "source"
	cfg.StopTimeout = 300 * time.Millisecond
	p, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	eventually(t, 10*time.Second, "proxy ready", func() error { return p.Ready() })

	p.wg.Add(1) // a connection goroutine that is stuck
	defer p.wg.Done()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopTimeout) {
			t.Fatalf("Run returned %v, want ErrStopTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of its context's end (StopTimeout 300 ms)")
	}
}
