package proxy

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// keepStaleView keeps the proxy's metadata from refreshing by itself
// during a test, so that a view the test made stale stays stale.
func keepStaleView(c *Config) { c.metadataRefresh = time.Hour }

// moveLeaders moves every partition of the bed's topic on the source to
// the broker after its leader (p%3 → (p+1)%3) and leaves the proxy
// believing the old leaders: a move it has not heard of, as after a
// preferred-leader election or a controlled shutdown between two of its
// refreshes.
func moveLeaders(t *testing.T, tp *testProxy, topic string) {
	t.Helper()
	stale := kmsg.NewPtrMetadataResponse()
	stale.Version = 12
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = kmsg.StringPtr(topic)
	for p := range int32(6) {
		if err := tp.source.Fake.MoveTopicPartition(topic, p, (p+1)%3); err != nil {
			t.Fatal(err)
		}
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition, mp.Leader = p, p%3
		mt.Partitions = append(mt.Partitions, mp)
	}
	stale.Topics = append(stale.Topics, mt)
	tp.upstreams["source"].learnMetadata(stale)
	if l, _ := tp.upstreams["source"].leader(topic, 0); l != 0 {
		t.Fatalf("the proxy's view: partition 0 led by %d, want the stale 0", l)
	}
}

// TestProduceResentToNewLeader: partitions a broker refuses because their
// leader moved after the proxy's last refresh are sent again to the new
// leader, and the client gets one answer with every partition written —
// with the new leader named in the refusal (KIP-951, v10+) and without it
// (v9: the proxy asks the cluster).
func TestProduceResentToNewLeader(t *testing.T) {
	for _, version := range []int16{9, 13} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			tp, _, topic := leadersBed(t, keepStaleView)
			v := viewOf(t, tp, topic)
			moveLeaders(t, tp, topic)
			for p, code := range produceAll(t, v, v.leader[0], version, -1, topic, "moved") {
				if code != 0 {
					t.Errorf("partition %d: %v", p, kerr.ErrorForCode(code))
				}
			}
			if n := testutil.ToFloat64(tp.m.produceResends); n != 6 {
				t.Errorf("produce_resent_partitions_total %v, want 6 (each partition refused once)", n)
			}
			waitValues(t, tp.source, topic, "moved")
		})
	}

	t.Run("routing-broker", func(t *testing.T) {
		// Without routing nothing is re-sent: the client is told.
		tp, _, topic := leadersBed(t, keepStaleView, func(c *Config) { c.Routing = RoutingBroker })
		v := viewOf(t, tp, topic)
		moveLeaders(t, tp, topic)
		if code := produceAll(t, v, v.leader[0], 13, -1, topic, "b")[0]; code != kerr.NotLeaderForPartition.Code {
			t.Errorf("partition 0: %v, want NOT_LEADER_OR_FOLLOWER", kerr.ErrorForCode(code))
		}
	})
}

// TestProduceResendKeepsOrder: batches a client pipelined to a partition
// whose leader moved reach the new leader in the order sent — the first
// ones refused and re-sent by the proxy, the later ones held behind them
// by the fence, not sent straight to the new leader ahead of them.
func TestProduceResendKeepsOrder(t *testing.T) {
	tp, _, topic := leadersBed(t, keepStaleView)
	v := viewOf(t, tp, topic)
	moveLeaders(t, tp, topic)
	c := dialWire(t, v.addr[v.leader[0]], "ordered")
	const n = 40
	req := func(i int) *kmsg.ProduceRequest {
		r := kmsg.NewPtrProduceRequest()
		r.Version, r.Acks, r.TimeoutMillis = 13, -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.TopicID = v.id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = 0
		rp.Records = plainBatch(fmt.Sprintf("o-%02d", i))
		rt.Partitions = append(rt.Partitions, rp)
		r.Topics = append(r.Topics, rt)
		return r
	}
	var corrs []int32
	for i := range n / 2 {
		corrs = append(corrs, c.send(req(i)))
	}
	// The rest as soon as the proxy has learned the new leader from the
	// first refusal, while it re-sends the others: without the fence they
	// would go straight to the new leader, ahead of those.
	u := tp.upstreams["source"]
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		if l, _ := u.leader(topic, 0); l == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not learn partition 0's new leader from a refusal")
		}
	}
	for i := n / 2; i < n; i++ {
		corrs = append(corrs, c.send(req(i)))
	}
	for i, corr := range corrs {
		for p, code := range codes(t, c.recv(req(i), corr)) {
			if code != 0 {
				t.Errorf("batch %d, partition %d: %v", i, p, kerr.ErrorForCode(code))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := partitionValues(ctx, t, tp.source, topic, 0, n)
	for i, val := range got {
		if want := fmt.Sprintf("o-%02d", i); val != want {
			t.Fatalf("partition 0 holds %q at %d, want %q: %q", val, i, want, got)
		}
	}
}

// TestProduceResendGivesUpAtTheDeadline: a partition refused NOT_LEADER
// again and again (a leader that never settles) is answered with the
// refusal once the request's timeout has passed, not held for ever; a
// refusal that clears within it is not seen by the client.
func TestProduceResendGivesUpAtTheDeadline(t *testing.T) {
	tp, _, topic := leadersBed(t, keepStaleView)
	v := viewOf(t, tp, topic)
	fault := func(count int) *kfake.FaultHandle {
		return tp.source.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{0},
			Err: kerr.NotLeaderForPartition, Count: count})
	}
	c := dialWire(t, v.addr[v.leader[0]], "deadline")
	one := func(timeout int32, tag string) int16 {
		r := kmsg.NewPtrProduceRequest()
		r.Version, r.Acks, r.TimeoutMillis = 9, 1, timeout
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = plainBatch(tag)
		rt.Partitions = append(rt.Partitions, rp)
		r.Topics = append(r.Topics, rt)
		return codes(t, c.roundTrip(r))[0]
	}

	h := fault(3)
	if code := one(5000, "cleared"); code != 0 {
		t.Errorf("refused 3 times, then written: %v", kerr.ErrorForCode(code))
	}
	if hits := h.Hits(); hits != 3 {
		t.Errorf("the fault was hit %d times, want 3", hits)
	}

	h = fault(-1)
	defer h.Remove()
	start := time.Now()
	if code := one(300, "never"); code != kerr.NotLeaderForPartition.Code {
		t.Errorf("refused for ever: %v, want NOT_LEADER_OR_FOLLOWER", kerr.ErrorForCode(code))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("answered after %v; the request's timeout was 300 ms", took)
	}
	if hits := h.Hits(); hits < 2 {
		t.Errorf("the fault was hit %d times: not re-sent within the timeout", hits)
	}
}
