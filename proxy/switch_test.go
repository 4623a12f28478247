package proxy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/stubmirror"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSwitchMidStream runs a producer and a consumer group through the
// proxy, and performs the cutover procedure the control plane automates:
// gate Produce (HOLD), wait for in-flight produce to drain, copy the data,
// switch, lift the gate. Every acknowledged record must end up on the target
// exactly once and in order, and the consumer must see every record.
func TestSwitchMidStream(t *testing.T) {
	for _, tc := range []struct {
		name     string
		producer []kgo.Opt
		remaps   float64 // producer ids remapped onto the target
	}{
		// The default: idempotent, five requests in flight per broker. The
		// proxy remaps its producer id onto the target.
		{"idempotent", nil, 1},
		{"plain", []kgo.Opt{kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(1)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { testSwitchMidStream(t, tc.producer, tc.remaps) })
	}
}

func testSwitchMidStream(t *testing.T, producerOpts []kgo.Opt, wantRemaps float64) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "switch")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	producer := tp.client(t, producerOpts...)
	group := "g-" + topic
	consumer := tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.AutoCommitInterval(100*time.Millisecond))

	// Produce continuously in the background until told to stop.
	var (
		acked   atomic.Int64
		prodErr atomic.Value
		next    atomic.Int64
		stop    = make(chan struct{})
		prodWG  sync.WaitGroup
		consWG  sync.WaitGroup
	)
	prodWG.Add(1)
	go func() {
		defer prodWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := int(next.Add(1) - 1)
			r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i%16)), Value: []byte(fmt.Sprintf("%d", i))}
			if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
				prodErr.Store(err)
				return
			}
			acked.Add(1)
		}
	}()

	// Consume in the background.
	var (
		mu       sync.Mutex
		consumed []seen
	)
	consCtx, stopConsumer := context.WithCancel(ctx)
	consWG.Add(1)
	go func() {
		defer consWG.Done()
		for consCtx.Err() == nil {
			fs := consumer.PollFetches(consCtx)
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				var seq int
				fmt.Sscanf(string(r.Value), "%d", &seq)
				consumed = append(consumed, seen{r.Partition, r.Offset, string(r.Key), seq})
			})
			mu.Unlock()
		}
	}()

	eventually(t, 30*time.Second, "500 records acked before the switch", func() error {
		if acked.Load() < 500 {
			return fmt.Errorf("%d acked", acked.Load())
		}
		return nil
	})

	// Gate → drain → copy → flip → release.
	if err := tp.SetGate(Gate{APIKeys: []int16{0}, Mode: GateHold}); err != nil {
		t.Fatalf("set gate: %v", err)
	}
	eventually(t, 10*time.Second, "produce drained", func() error {
		if n := tp.Status().InFlightByAPI[0]; n != 0 {
			return fmt.Errorf("%d produce requests in flight", n)
		}
		return nil
	})
	copied, err := stubmirror.CopyTopic(ctx, source.Bootstrap, target.Bootstrap, topic)
	if err != nil {
		t.Fatal(err)
	}
	// The producer is synchronous: at most the one record it is waiting
	// on was acknowledged and not yet counted.
	ackedBefore := int64(copied)
	if a := acked.Load(); ackedBefore != a && ackedBefore != a+1 {
		t.Fatalf("copied %d records from the source, %d were acked before the gate", copied, a)
	}
	if err := stubmirror.CopyGroupOffsets(ctx, source.Bootstrap, target.Bootstrap, group); err != nil {
		t.Fatal(err)
	}
	rep, err := tp.Switch(ctx, "target")
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	tp.ClearGate()
	t.Logf("switch: %+v (took %v)", rep, rep.Duration())

	eventually(t, 30*time.Second, "500 records acked after the switch", func() error {
		if acked.Load() < ackedBefore+500 {
			return fmt.Errorf("%d acked", acked.Load())
		}
		return nil
	})
	close(stop)
	prodWG.Wait()
	total := int(acked.Load())
	if err, _ := prodErr.Load().(error); err != nil {
		t.Fatalf("producer error: %v", err)
	}

	eventually(t, 30*time.Second, "consumer saw every record", func() error {
		mu.Lock()
		defer mu.Unlock()
		distinct := map[int]bool{}
		for _, s := range consumed {
			distinct[s.seq] = true
		}
		if len(distinct) < total {
			return fmt.Errorf("%d of %d", len(distinct), total)
		}
		return nil
	})
	stopConsumer()
	consWG.Wait()
	mu.Lock()
	checkRecords(t, consumed, 0, total)
	mu.Unlock()

	// The target holds every record exactly once, in order; the source only
	// those acked before the gate.
	onTarget := consumeN(ctx, t, target.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), total)
	if len(onTarget) != total {
		t.Errorf("target holds %d records, want %d", len(onTarget), total)
	}
	checkRecords(t, onTarget, 0, total)
	ends, err := kadm.NewClient(source.Client(t)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var onSource int64
	ends.Each(func(o kadm.ListedOffset) { onSource += o.Offset })
	if onSource != ackedBefore {
		t.Errorf("source holds %d records, want the %d copied before the switch", onSource, ackedBefore)
	}
	if got := testutil.ToFloat64(tp.m.pidRemaps.WithLabelValues("target")); got != wantRemaps {
		t.Errorf("producer ids remapped onto the target: %v, want %v", got, wantRemaps)
	}
	st := tp.Status()
	if st.ActiveCluster != "target" || st.Switches != 1 {
		t.Errorf("status after switch: active %s, switches %d", st.ActiveCluster, st.Switches)
	}
}
