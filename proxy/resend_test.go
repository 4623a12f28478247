package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
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

// TestProduceResendStopsAtASwitch: a switch that gives up waiting for a
// Produce the proxy is still re-sending (drainTimeout) ends that client
// connection, as for any request undrained; no re-send reaches the old
// cluster after the switch, even once the old cluster would take it.
func TestProduceResendStopsAtASwitch(t *testing.T) {
	tp, _, topic := leadersBed(t, keepStaleView, func(c *Config) { c.DrainTimeout = 100 * time.Millisecond })
	v := viewOf(t, tp, topic)
	h := tp.source.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{0},
		Err: kerr.NotLeaderForPartition, Count: -1})
	c := dialWire(t, v.addr[v.leader[0]], "switched")
	r := kmsg.NewPtrProduceRequest()
	r.Version, r.Acks, r.TimeoutMillis = 9, 1, 8000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = plainBatch("late")
	rt.Partitions = append(rt.Partitions, rp)
	r.Topics = append(r.Topics, rt)
	c.send(r)
	eventually(t, 10*time.Second, "the refused partition re-sent", func() error {
		if h.Hits() < 2 {
			return fmt.Errorf("%d refusals", h.Hits())
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	h.Remove() // the old cluster would take the batch now
	if frame, err := c.tryReadFrame(); err == nil {
		t.Fatalf("answered (%d bytes) after the switch abandoned the request; want the connection closed", len(frame))
	}
	// The writer stopped with the connection: nothing is in flight.
	ends, err := kadm.NewClient(tp.source.Client(t)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 0); o.Offset != 0 {
		t.Errorf("the old cluster's partition 0 ends at %d after the switch, want 0: a re-send reached it", o.Offset)
	}
}

// v1Batch is a record batch of values, without a producer id unless pid
// is not -1, its length set as a client sets it.
func v1Batch(pid int64, values ...string) []byte {
	b := kmsg.RecordBatch{Magic: 2, ProducerID: pid, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(len(values)),
		LastOffsetDelta: int32(len(values) - 1), FirstTimestamp: 1796600000000, MaxTimestamp: 1796600000000}
	if pid >= 0 {
		b.ProducerEpoch, b.FirstSequence = 0, 0
	}
	for i, v := range values {
		b.Records = append(b.Records, (&kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}).AppendTo(nil)...)
	}
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	// The CRC covers attributes to the end (Castagnoli).
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[batchAttrsOff:], castagnoli))
	return raw
}

// refusedProduce is a Produce v9 (acks=all, correlation id 7) of records
// to partition 0 of topic, walked as the proxy walks it, and a broker's
// answer refusing it NOT_LEADER_OR_FOLLOWER: after appending it at
// baseOffset, or before appending (-1).
func refusedProduce(t *testing.T, topic string, records []byte, baseOffset int64) ([]byte, requestHeader, *walkedProduce, []byte) {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = records
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	frame := requestFrameFor(req, 7)
	hdr := mustHeader(t, frame)
	w, err := walkProduce(frame[hdr.BodyOffset:], hdr.Version)
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 9
	st := kmsg.NewProduceResponseTopic()
	st.Topic = topic
	sp := kmsg.NewProduceResponseTopicPartition()
	sp.ErrorCode, sp.BaseOffset = kerr.NotLeaderForPartition.Code, baseOffset
	if baseOffset >= 0 {
		sp.LogStartOffset = 0
	}
	st.Partitions = append(st.Partitions, sp)
	resp.Topics = append(resp.Topics, st)
	return frame, hdr, &w, responseFrame(keyProduce, 9, 7, resp.AppendTo(nil))
}

// TestRefusalAfterAppendClassified: a broker that lost its leadership
// while an acks=all Produce was being replicated answers
// NOT_LEADER_OR_FOLLOWER with the offsets of the append (Kafka's
// DelayedProduce): the records may have survived on the new leader. A
// batch with a producer id is re-sent as it is (the new leader recognises a
// batch it has); one batch without is re-sent only once the new leader is
// asked (appendedAt set, survival.go); several batches without cannot be
// asked for and get the refusal. A refusal before the append (base offset
// -1) is re-sent either way.
func TestRefusalAfterAppendClassified(t *testing.T) {
	p, u := benchProxy(t, map[string][16]byte{"t": topicID(0)})
	c := &clientConn{p: p, log: zap.NewNop()}
	for _, tc := range []struct {
		name       string
		records    []byte
		baseOffset int64
		refused    bool  // kept as a refusal to handle
		appendedAt int64 // its appendedAt
	}{
		{"appended, no producer id", v1Batch(-1, "x"), 40, true, 40},
		{"appended, idempotent", v1Batch(7, "x"), 40, true, -1},
		{"not appended, no producer id", v1Batch(-1, "x"), -1, true, -1},
		{"appended, two batches without producer id", append(v1Batch(-1, "x"), v1Batch(-1, "y")...), 40, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame, hdr, w, refusal := refusedProduce(t, "t", tc.records, tc.baseOffset)
			pr := &pendingReq{hdr: hdr, up: &upConn{u: u, node: 1}, resend: &produceResend{frame: frame, walk: w}}
			before := testutil.ToFloat64(p.m.appendedRefusals.WithLabelValues("refused"))
			refused, err := c.refusals(pr, [][]byte{refusal}, []*upConn{pr.up})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(refused) == 1; got != tc.refused {
				t.Fatalf("kept to handle: %v, want %v", got, tc.refused)
			}
			if tc.refused && refused[0].appendedAt != tc.appendedAt {
				t.Errorf("appendedAt %d, want %d", refused[0].appendedAt, tc.appendedAt)
			}
			if n := testutil.ToFloat64(p.m.appendedRefusals.WithLabelValues("refused")) - before; n != map[bool]float64{true: 0, false: 1}[tc.refused] {
				t.Errorf("produce_appended_refusals_total{outcome=refused} rose by %v", n)
			}
		})
	}
}

// TestAppendedRefusalAskedOfTheNewLeader: a batch without a producer id
// that the old leader refused after appending it at offset X, the leader
// having moved since (kfake, a new epoch), is answered according to the new
// leader: it has the very batch at X, from before its epoch — answered as
// written at X, not written again; its log ends at X — sent again, written
// once; X holds a batch of its own epoch, even one identical to ours —
// ours was not replicated: sent again; X holds another batch from before —
// the client gets the refusal, nothing written.
func TestAppendedRefusalAskedOfTheNewLeader(t *testing.T) {
	tp, _, topic := leadersBed(t, keepStaleView)
	u := tp.upstreams["source"]
	direct := tp.source.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader := int32(0) // partition 0's, on kfake
	// write puts records on partition 0 through its leader, as the old
	// leader's append (or another producer) would have; it returns their
	// base offset.
	write := func(records []byte) int64 {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rt.TopicID, _ = u.topicID(topic) // the client picks the version
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = records
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kresp, err := direct.Broker(int(leader)).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		p := kresp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if p.ErrorCode != 0 {
			t.Fatal(kerr.ErrorForCode(p.ErrorCode))
		}
		return p.BaseOffset
	}
	// move makes the next broker partition 0's leader (a new epoch) and
	// returns the old leader; the proxy's view stays the old one.
	move := func() int32 {
		t.Helper()
		old := leader
		leader = (leader + 1) % 3
		if err := tp.source.Fake.MoveTopicPartition(topic, 0, leader); err != nil {
			t.Fatal(err)
		}
		return old
	}
	end := func() int64 {
		t.Helper()
		ends, err := kadm.NewClient(direct).ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := ends.Lookup(topic, 0)
		return o.Offset
	}
	// answer runs the writer's handling of a Produce of ours that broker
	// by refused after appending it at offset at, and returns the
	// client's answer for the partition.
	answer := func(ours []byte, at int64, by int32) kmsg.ProduceResponseTopicPartition {
		t.Helper()
		c := &clientConn{p: tp.Proxy, log: zaptest.NewLogger(t)}
		defer func() {
			for _, l := range c.wlinks {
				l.close()
			}
		}()
		frame, hdr, w, refusal := refusedProduce(t, topic, ours, at)
		tp.mu.Lock()
		gen := tp.gen
		tp.mu.Unlock()
		pr := &pendingReq{hdr: hdr, up: &upConn{u: u, gen: gen, node: by}, sent: time.Now(),
			resend: &produceResend{frame: frame, walk: w}}
		out, _, err, bad := c.finishProduce(ctx, pr, [][]byte{refusal}, []*upConn{pr.up})
		if err != nil || bad != nil {
			t.Fatalf("finishProduce: %v %v", err, bad)
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = 9
		if err := resp.ReadFrom(out[5:]); err != nil { // correlation id, empty tags
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0]
	}
	outcome := func(o string) float64 { return testutil.ToFloat64(tp.m.appendedRefusals.WithLabelValues(o)) }
	expect := func(what string, got kmsg.ProduceResponseTopicPartition, code int16, offset, ends int64) {
		t.Helper()
		if got.ErrorCode != code || (code == 0 && got.BaseOffset != offset) {
			t.Errorf("%s: answered %v at %d, want %v at %d", what, kerr.ErrorForCode(got.ErrorCode), got.BaseOffset, kerr.ErrorForCode(code), offset)
		}
		if e := end(); e != ends {
			t.Errorf("%s: partition 0 ends at %d, want %d", what, e, ends)
		}
	}

	// The new leader has the batch, from before its epoch.
	ours := v1Batch(-1, "kept")
	at := write(ours)
	expect("the new leader has the batch", answer(ours, at, move()), 0, at, at+1)

	// Its log ends where the batch was appended.
	at = end()
	expect("its log ends at the append", answer(v1Batch(-1, "lost"), at, move()), 0, at, at+1)

	// Its epoch began at the append's offset and holds a batch identical to
	// ours there (another producer's): ours was not replicated.
	by := move()
	at = write(v1Batch(-1, "same"))
	expect("an identical batch of the new epoch", answer(v1Batch(-1, "same"), at, by), 0, at+1, at+2)

	// Another batch from before its epoch is where ours was appended.
	at = write(v1Batch(-1, "them"))
	expect("another batch from before the epoch", answer(v1Batch(-1, "mine"), at, move()), kerr.NotLeaderForPartition.Code, 0, at+1)

	for o, want := range map[string]float64{"written": 1, "resent": 2, "refused": 1} {
		if got := outcome(o); got != want {
			t.Errorf("produce_appended_refusals_total{outcome=%q} %v, want %v", o, got, want)
		}
	}
}
