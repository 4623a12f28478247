package proxy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// epochsOf returns the leader epoch the proxy presents for each partition
// of the bed's topic.
func epochsOf(t *testing.T, tp *testProxy, topic string) map[int32]int32 {
	t.Helper()
	c := dialWire(t, tp.Addr().String(), "epochs")
	out := map[int32]int32{}
	for _, tm := range c.roundTrip(topicMetadata(topic)).(*kmsg.MetadataResponse).Topics {
		for _, p := range tm.Partitions {
			if p.ErrorCode != 0 {
				t.Errorf("metadata: partition %d: %v", p.Partition, kerr.ErrorForCode(p.ErrorCode))
			}
			if !containsID(p.Replicas, p.Leader) || !containsID(p.ISR, p.Leader) {
				t.Errorf("metadata: partition %d led by %d, replicas %v, in-sync %v", p.Partition, p.Leader, p.Replicas, p.ISR)
			}
			out[p.Partition] = p.LeaderEpoch
		}
	}
	return out
}

func containsID(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestLeadersStayWhereClientsSawThem: the leader a client is shown for a
// partition does not change when the real leader moves on the cluster,
// nor at a switch to a cluster whose leaders differ; the leader epochs it
// is shown rise. With routing "broker" the client sees the moves.
func TestLeadersStayWhereClientsSawThem(t *testing.T) {
	tp, _, topic := leadersBed(t)
	first := viewOf(t, tp, topic)
	epochs := epochsOf(t, tp, topic)
	check := func(when string) {
		t.Helper()
		now := viewOf(t, tp, topic)
		after := epochsOf(t, tp, topic)
		for p := range int32(6) {
			if now.leader[p] != first.leader[p] {
				t.Errorf("%s: partition %d shown led by %d, first by %d", when, p, now.leader[p], first.leader[p])
			}
			if after[p] <= epochs[p] {
				t.Errorf("%s: partition %d epoch %d, before %d: want it risen", when, p, after[p], epochs[p])
			}
			if _, ok := now.addr[now.leader[p]]; !ok {
				t.Errorf("%s: partition %d's leader %d is not among the brokers %v", when, p, now.leader[p], now.addr)
			}
		}
		epochs = after
	}
	for p := range int32(6) {
		if err := tp.source.Fake.MoveTopicPartition(topic, p, (p+1)%3); err != nil {
			t.Fatal(err)
		}
	}
	check("after every leader moved")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	check("after a switch to a cluster whose leaders differ")

	t.Run("routing-broker", func(t *testing.T) {
		tp, _, topic := leadersBed(t, func(c *Config) { c.Routing = RoutingBroker })
		first := viewOf(t, tp, topic)
		for p := range int32(6) {
			if err := tp.source.Fake.MoveTopicPartition(topic, p, (p+1)%3); err != nil {
				t.Fatal(err)
			}
		}
		now := viewOf(t, tp, topic)
		for p := range int32(6) {
			if now.leader[p] == first.leader[p] {
				t.Errorf("partition %d shown led by %d after its leader moved: routing broker shows the real leaders", p, now.leader[p])
			}
		}
	})
}

// TestClientsAcrossLeaderMoves: a franz-go idempotent producer and a
// consumer group run through the proxy while the source's partition
// leaders move, one partition every few milliseconds. The producer gets no
// error, the consumer reads every record once, in order per partition, and
// neither is shown a leader change.
func TestClientsAcrossLeaderMoves(t *testing.T) {
	tp, _, topic := leadersBed(t)
	first := viewOf(t, tp, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	producer := tp.client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(0)) // every error it gets is the test's failure
	consumer := tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(topic+"-group"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))

	const perPartition = 300
	moving, stopMoving := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var moves atomic.Int64
	wg.Go(func() {
		for i := 0; moving.Err() == nil; i++ {
			p := int32(i % 6)
			if err := tp.source.Fake.MoveTopicPartition(topic, p, int32(i/6+int(p))%3); err != nil {
				t.Errorf("move: %v", err)
				return
			}
			moves.Add(1)
			select {
			case <-moving.Done():
			case <-time.After(3 * time.Millisecond):
			}
		}
	})
	defer func() { stopMoving(); wg.Wait() }()
	var produced sync.WaitGroup
	produced.Go(func() {
		for i := range perPartition {
			if i == perPartition-1 {
				// The last records are written after the last move:
				// kfake, unlike Kafka, remembers only the epochs it
				// wrote batches in, and answers a consumer validating
				// its position at an epoch with no later batch "no
				// such epoch" (franz-go then resets the partition).
				stopMoving()
				wg.Wait()
			}
			for p := range int32(6) {
				r := &kgo.Record{Partition: p, Value: []byte(fmt.Sprintf("%d-%d", p, i))}
				if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Errorf("produce %d-%d: %v", p, i, err)
					return
				}
			}
		}
	})
	read := map[int32][]string{}
	total := 0
	for total < 6*perPartition && ctx.Err() == nil {
		fs := consumer.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil {
				t.Errorf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			read[r.Partition] = append(read[r.Partition], string(r.Value))
			total++
		})
	}
	produced.Wait()
	for p := range int32(6) {
		if len(read[p]) != perPartition {
			t.Errorf("partition %d: %d records read, want %d", p, len(read[p]), perPartition)
			continue
		}
		for i, v := range read[p] {
			if want := fmt.Sprintf("%d-%d", p, i); v != want {
				t.Errorf("partition %d, record %d: %q, want %q", p, i, v, want)
				break
			}
		}
	}
	now := viewOf(t, tp, topic)
	for p := range int32(6) {
		if now.leader[p] != first.leader[p] {
			t.Errorf("partition %d shown led by %d, first by %d", p, now.leader[p], first.leader[p])
		}
	}
	t.Logf("%d leader moves; fetches routed %v, partitions asked again %v, produce partitions re-sent %v",
		moves.Load(), testutil.ToFloat64(tp.m.fetchRouted), testutil.ToFloat64(tp.m.fetchAbsorbed), testutil.ToFloat64(tp.m.produceResends))
}

// TestFetchSessionEndsWhenAPartitionMoves: a consumer holds a fetch
// session with the broker behind its virtual broker; a partition of the
// session moves to another broker. Shown the same leader, the client would
// be told NOT_LEADER_OR_FOLLOWER, ask for metadata naming the same leader
// and fetch from the same broker again, without end. The proxy answers
// FETCH_SESSION_ID_NOT_FOUND instead: the client's next, full fetch is
// routed, and the moved partition's records come from its new leader.
func TestFetchSessionEndsWhenAPartitionMoves(t *testing.T) {
	tp, _, topic := leadersBed(t)
	v := viewOf(t, tp, topic)
	for p, code := range produceAll(t, v, v.leader[0], 9, -1, topic, "s") {
		if code != 0 {
			t.Fatalf("produce partition %d: %v", p, kerr.ErrorForCode(code))
		}
	}
	c := dialWire(t, v.addr[v.leader[0]], "session")
	fetch := func(session, epoch int32, parts ...int32) *kmsg.FetchResponse {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, -1, 500, 1, 1<<20
		req.SessionID, req.SessionEpoch = session, epoch
		if len(parts) > 0 {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = topic
			for _, p := range parts {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, 0, 1<<20
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
		}
		return c.roundTrip(req).(*kmsg.FetchResponse)
	}
	// Partitions 0 and 3 are led by broker 0, the virtual broker's own: a
	// full fetch asking for a session is forwarded, and the broker opens
	// one.
	first := fetch(0, 0, 0, 3)
	if first.ErrorCode != 0 || first.SessionID <= 0 {
		t.Fatalf("first fetch: error %v, session %d: want a session", kerr.ErrorForCode(first.ErrorCode), first.SessionID)
	}
	if err := tp.source.Fake.MoveTopicPartition(topic, 0, 1); err != nil {
		t.Fatal(err)
	}
	// The session's next fetch (incremental: offsets unchanged, nothing
	// named) reaches broker 0, which no longer leads partition 0.
	next := fetch(first.SessionID, 1)
	if next.ErrorCode != kerr.FetchSessionIDNotFound.Code || len(next.Topics) != 0 {
		t.Fatalf("fetch in the session after the move: error %v, %d topics; want FETCH_SESSION_ID_NOT_FOUND and nothing else",
			kerr.ErrorForCode(next.ErrorCode), len(next.Topics))
	}
	// The client starts again with a full fetch: routed, partition 0 from
	// broker 1. (Answered once one broker's records are in: the other's
	// may come with the next fetch.)
	routed := testutil.ToFloat64(tp.m.fetchRouted)
	got := map[int32][]string{}
	for round := 0; len(got[0]) == 0 || len(got[3]) == 0; round++ {
		if round == 5 {
			t.Fatalf("full fetches after the session ended: %v, want s-0 and s-3", got)
		}
		var parts []int32
		for _, p := range []int32{0, 3} {
			if len(got[p]) == 0 {
				parts = append(parts, p)
			}
		}
		for p, vals := range fetchedValuesOf(t, fetch(0, 0, parts...)) {
			got[p] = append(got[p], vals...)
		}
	}
	if fmt.Sprint(got[0]) != "[s-0]" || fmt.Sprint(got[3]) != "[s-3]" {
		t.Errorf("full fetches after the session ended: %v, want s-0 and s-3", got)
	}
	if n := testutil.ToFloat64(tp.m.fetchRouted); n <= routed {
		t.Errorf("fetch_routed_total %v: the full fetch naming the moved partition was not routed", n)
	}
}

// fetchedValuesOf returns the records' values by partition of a fetch
// response whose partitions carry no error.
func fetchedValuesOf(t *testing.T, resp *kmsg.FetchResponse) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				t.Errorf("partition %d answered %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
			}
			out[rp.Partition] = batchValues(t, rp.RecordBatches)
		}
	}
	return out
}
