package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/wirecheck"
)

// held returns every value a cluster holds in topic, per partition, read to
// the settled end.
func held(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	for _, r := range c.ReadCommitted(ctx, t, topic) {
		out[r.Partition] = append(out[r.Partition], string(r.Value))
	}
	return out
}

// values returns the values from..to-1 as the test batches write them.
func values(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// seqSetup starts a proxy between a source and a target holding topic with
// the given partitions, and a hand-driven producer.
func seqSetup(t *testing.T, name string, partitions int32, mutate ...func(*Config)) (ctx context.Context, tp *testProxy, p *seqProducer, target *kafkatest.Cluster) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, name)
	source.CreateTopic(t, topic, partitions)
	target.CreateTopic(t, topic, partitions)
	tp = startProxy(t, source, target, mutate...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx, tp, newSeqProducer(t, tp, topic), target
}

func wantCode(t *testing.T, what string, got, want int16) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: %v, want %v", what, kerr.ErrorForCode(got), kerr.ErrorForCode(want))
	}
}

// TestResendOfWrittenBatchAfterSwitch: a client that resends, after the
// switch, a batch the source wrote (its acknowledgement lost) is told it was
// written; the target does not get it a second time, and the next batch
// follows on.
func TestResendOfWrittenBatchAfterSwitch(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "resend", 1)
	wantCode(t, "source, first batch", p.send(0, 0, 0, 5), 0)
	wantCode(t, "source, second batch", p.send(0, 5, 5, 5), 0)
	// Another topic's request of the same shape on the same connection
	// reuses the proxy's read buffer: nothing kept from the requests
	// before may alias it.
	other := p.produce(0, seqBatch{0, 0, 0, 1})
	other.Topics[0].Topic = "x" + p.topic[1:]
	p.conn(p.leaderOf(0)).roundTrip(other)
	before := gatheredValue(t, tp.reg, "switchyard_proxy_producer_sequence_checks_total", "outcome", "duplicate")
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	// The client lost the acknowledgement with its connection: it
	// resends on a new one.
	p.conns = map[string]*wireConn{}
	wantCode(t, "target, the second batch again", p.send(0, 5, 5, 5), 0)
	wantCode(t, "target, the next batch", p.send(0, 10, 10, 5), 0)
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, values(10, 15)) {
		t.Fatalf("target holds %q, want 10..14 once", got)
	}
	if d := gatheredValue(t, tp.reg, "switchyard_proxy_producer_sequence_checks_total", "outcome", "duplicate") - before; d != 1 {
		t.Fatalf("duplicates answered: %v, want 1", d)
	}
}

// TestOvertakingBatchAfterSwitch: a batch that overtakes the one before it
// after the switch (a client resending out of order) is refused as out of
// order, as the source would have; once the client sends in order the
// target holds every record once, in order.
func TestOvertakingBatchAfterSwitch(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "overtake", 1)
	wantCode(t, "source", p.send(0, 0, 0, 5), 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "target, a batch ahead of the next", p.send(0, 10, 10, 5), kerr.OutOfOrderSequenceNumber.Code)
	wantCode(t, "target, the next batch", p.send(0, 5, 5, 5), 0)
	wantCode(t, "target, the batch refused before", p.send(0, 10, 10, 5), 0)
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, values(5, 15)) {
		t.Fatalf("target holds %q, want 5..14 in order", got)
	}
}

// TestFailedFirstBatchAfterSwitch: the first batch after the switch fails
// on the target (sent to a broker that does not lead the partition there);
// the batch after it is not taken as the new start: it is refused until the
// failed one is resent. Routing "broker" lets the client reach the follower
// (with routing "leader" the proxy sends the batch to the leader; a
// NOT_LEADER_OR_FOLLOWER then comes only from metadata the proxy has not
// refreshed yet, which the test cannot time).
func TestFailedFirstBatchAfterSwitch(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "failedfirst", 1, func(c *Config) { c.Routing = RoutingBroker })
	wantCode(t, "source", p.send(0, 0, 0, 5), 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	leader := p.leaderOf(0)
	other := int32(-1)
	for _, b := range p.brokers() {
		if b != leader {
			other = b
		}
	}
	if other < 0 {
		t.Skip("the target has one broker: no broker to fail the first batch on")
	}
	wantCode(t, "target, first batch to a follower", p.sendTo(other, 0, seqBatch{0, 5, 5, 5})[0], kerr.NotLeaderForPartition.Code)
	wantCode(t, "target, the batch after it", p.sendTo(leader, 0, seqBatch{0, 10, 10, 5})[0], kerr.OutOfOrderSequenceNumber.Code)
	wantCode(t, "target, the first batch resent", p.sendTo(leader, 0, seqBatch{0, 5, 5, 5})[0], 0)
	wantCode(t, "target, the batch after it resent", p.sendTo(leader, 0, seqBatch{0, 10, 10, 5})[0], 0)
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, values(5, 15)) {
		t.Fatalf("target holds %q, want 5..14 in order", got)
	}
}

// TestPipelinedBatchesAfterSwitch: a client with two requests in flight
// right after the switch gets no error: the batch behind the partition's
// first one waits for its answer, then follows it.
func TestPipelinedBatchesAfterSwitch(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "pipelined", 1)
	wantCode(t, "source", p.send(0, 0, 0, 5), 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	c := p.conn(p.leaderOf(0))
	req1, req2 := p.produce(0, seqBatch{0, 5, 5, 5}), p.produce(0, seqBatch{0, 10, 10, 5})
	corr1 := c.send(req1)
	corr2 := c.send(req2)
	wantCode(t, "first request", codes(t, c.recv(req1, corr1))[0], 0)
	wantCode(t, "second request", codes(t, c.recv(req2, corr2))[0], 0)
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, values(5, 15)) {
		t.Fatalf("target holds %q, want 5..14 in order", got)
	}
}

// TestPartlyAnsweredProduceAfterSwitch: one request carries a resent batch
// the source wrote (answered by the proxy) and a new batch for another
// partition (forwarded): the client gets both answers in one response, the
// target only the new batch.
func TestPartlyAnsweredProduceAfterSwitch(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "partly", 3)
	for part := range int32(3) {
		wantCode(t, fmt.Sprintf("source, partition %d", part), p.sendTo(p.leaderOf(part), 0, seqBatch{part, 0, int(part) * 100, 5})[part], 0)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	// Two partitions led by the same target broker (3 partitions, at most
	// 2 brokers in the default target).
	byLeader := map[int32][]int32{}
	var a, b int32 = -1, -1
	for part := range int32(3) {
		l := p.leaderOf(part)
		byLeader[l] = append(byLeader[l], part)
		if len(byLeader[l]) == 2 {
			a, b = byLeader[l][0], byLeader[l][1]
		}
	}
	if a < 0 {
		t.Skip("no two partitions share a leader on the target")
	}
	got := p.sendTo(p.leaderOf(a), 0,
		seqBatch{a, 0, int(a) * 100, 5},   // written on the source: answered
		seqBatch{b, 5, int(b)*100 + 5, 5}) // new: forwarded
	if len(got) != 2 || got[a] != 0 || got[b] != 0 {
		t.Fatalf("response codes %v, want partitions %d and %d both 0", got, a, b)
	}
	h := held(ctx, t, target, p.topic)
	if len(h[a]) != 0 {
		t.Fatalf("target partition %d holds %q, want nothing (the batch was the source's)", a, h[a])
	}
	if want := values(int(b)*100+5, int(b)*100+10); !slices.Equal(h[b], want) {
		t.Fatalf("target partition %d holds %q, want %q", b, h[b], want)
	}
}

// FuzzProduceSequences drives a Produce request of any shape through the
// sequence check of a producer remapped onto the active cluster, then a
// response that accepts whatever was forwarded. Whatever the request, every
// partition it names is answered exactly once — by the proxy or by the
// cluster; a partition named twice once, as Kafka answers it — and no
// partition's probe stays open, whether the request was forwarded or
// refused.
func FuzzProduceSequences(f *testing.F) {
	p, u := newOfflineProxy(f)
	// The topic ids the proxy presents (the cluster's are testTopicIDs).
	var ids [][16]byte
	for i := range testTopicIDs() {
		name := fmt.Sprintf("topic-%d", i)
		id := virtualTopicID(p.clusterID, name)
		p.topicNames.Store(id, name)
		ids = append(ids, id)
	}
	old := &upstream{name: "old"}
	const realID = 7
	pid := p.pids.issued(old, -1, realID, 0)
	e, _ := p.pids.lookup(pid)
	for _, v := range []int16{3, 7, 9, 13} {
		for _, seqs := range [][2]int32{{10, 0}, {5, 0}, {15, 3}, {10, 9}} {
			req := kmsg.NewPtrProduceRequest()
			req.Version, req.Acks, req.TimeoutMillis = v, -1, 1000
			for ti := range 2 {
				rt := kmsg.NewProduceRequestTopic()
				rt.Topic, rt.TopicID = fmt.Sprintf("topic-%d", ti), ids[ti]
				for part, seq := range seqs {
					rp := kmsg.NewProduceRequestTopicPartition()
					rp.Partition, rp.Records = int32(part), idempotentBatch(pid, 0, seq, 0, 3)
					rt.Partitions = append(rt.Partitions, rp)
				}
				rt.Partitions[1].Records = append(rt.Partitions[1].Records, idempotentBatch(pid, 0, seqs[1]+3, 3, 2)...)
				req.Topics = append(req.Topics, rt)
			}
			f.Add(v, req.AppendTo(nil))
		}
		// The first batch of topic-0/0 (the probe), then a batch that
		// does not parse; and the partition named twice.
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = v, -1, 1000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "topic-0", ids[0]
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = append(idempotentBatch(pid, 0, 10, 0, 3), make([]byte, batchHeaderBytes)...)
		binary.BigEndian.PutUint32(rp.Records[len(rp.Records)-batchHeaderBytes+batchLengthOff:], 1<<30)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		f.Add(v, req.AppendTo(nil))
		rt.Partitions[0].Records = idempotentBatch(pid, 0, 10, 0, 3)
		rt.Partitions = append(rt.Partitions, rt.Partitions[0])
		req.Topics[0] = rt
		f.Add(v, req.AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		_, version = normalizeKeyVersion([]int16{keyProduce}, keyProduce, version)
		if version < 3 {
			version = 3
		}
		// Each input starts from the same state: topic-0/0 acknowledged up
		// to 10 on the old cluster, nothing established on this one.
		rm := &remappedProducer{id: 99, clientEpoch: -1, lastClientEpoch: -1, parts: map[topicPartition]*seqGate{}}
		p.pids.mu.Lock()
		e.onOther = map[string]*remappedProducer{u.name: rm}
		e.acked = ackedSeqs{}
		e.acked.set(topicPartition{"topic-0", 0}, ackedSeq{0, 10})
		p.pids.mu.Unlock()

		in := kmsg.NewPtrProduceRequest()
		in.SetVersion(version)
		// Walked first, as the proxy walks every request on arrival (and
		// closes the connection on a malformed one): kmsg alone spends
		// seconds on a declared tag count it cannot read (issue 14).
		if wirecheck.Request(keyProduce, version, body) != nil || in.ReadFrom(body) != nil {
			return
		}
		want := map[string]int{}
		key := func(topic string, id [16]byte, part int32) string {
			if version >= 13 {
				return fmt.Sprintf("%x/%d", id, part)
			}
			return fmt.Sprintf("%s/%d", topic, part)
		}
		for _, rt := range in.Topics {
			for _, rp := range rt.Partitions {
				want[key(rt.Topic, rt.TopicID, rp.Partition)] = 1
			}
		}
		noOpenProbe := func() {
			t.Helper()
			for tp, g := range rm.parts {
				if g.probe != nil {
					t.Fatalf("probe of %v still open", tp)
				}
			}
		}
		id := "fuzz"
		hdr, err := parseRequestHeader(requestFrame(requestHeader{Key: keyProduce, Version: version, CorrID: 5, ClientID: &id, Flexible: version >= 9}, body))
		if err != nil {
			t.Fatal(err)
		}
		frame := requestFrame(hdr, append([]byte(nil), body...))
		rw, err := p.rewriteRequest(deadCtx(), &clientConn{p: p}, u, hdr, frame)
		if err != nil {
			noOpenProbe() // the request is not forwarded: nothing will answer them
			return
		}
		if !rw.expect && rw.local == nil {
			p.releaseSeqs(rw.seqs)
			return
		}
		var answer []byte
		if rw.local != nil {
			answer = rw.local
		} else {
			// The cluster accepts every partition it was sent, and answers
			// a partition named twice once, as Kafka does.
			fh, err := parseRequestHeader(rw.frame)
			if err != nil {
				t.Fatalf("forwarded request header: %v", err)
			}
			fwd := kmsg.NewPtrProduceRequest()
			fwd.SetVersion(version)
			if err := fwd.ReadFrom(rw.frame[fh.BodyOffset:]); err != nil {
				t.Fatalf("forwarded request does not decode: %v", err)
			}
			resp := kmsg.NewPtrProduceResponse()
			resp.Version = version
			answered := map[string]bool{}
			for _, rt := range fwd.Topics {
				t2 := kmsg.NewProduceResponseTopic()
				t2.Topic, t2.TopicID = rt.Topic, rt.TopicID
				for _, rp := range rt.Partitions {
					if k := key(rt.Topic, rt.TopicID, rp.Partition); !answered[k] {
						answered[k] = true
						p2 := kmsg.NewProduceResponseTopicPartition()
						p2.Partition = rp.Partition
						t2.Partitions = append(t2.Partitions, p2)
					}
				}
				resp.Topics = append(resp.Topics, t2)
			}
			out, err := p.rewriteResponse(deadCtx(), u, &pendingReq{hdr: hdr, prevProducerID: -1, seqs: rw.seqs},
				responseFrame(keyProduce, version, hdr.CorrID, resp.AppendTo(nil)))
			if err != nil {
				t.Fatalf("response: %v", err)
			}
			answer = out
		}
		p.releaseSeqs(rw.seqs) // what the writer's deferred release does
		body2, err := stripResponseHeader(keyProduce, version, answer)
		if err != nil {
			t.Fatal(err)
		}
		got := kmsg.NewPtrProduceResponse()
		got.Version = version
		if err := got.ReadFrom(body2); err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
		for _, rt := range got.Topics {
			for _, rp := range rt.Partitions {
				want[key(rt.Topic, rt.TopicID, rp.Partition)]--
			}
		}
		for k, n := range want {
			if n != 0 {
				t.Fatalf("partition %s answered %d times too few", k, n)
			}
		}
		noOpenProbe()
	})
}

// TestOrphanBrokerAnswersNotLeader: after a switch to a cluster of fewer
// brokers, a virtual broker with no broker behind it forwards requests for
// partitions only when the broker it reaches leads all of them, and answers
// NOT_LEADER_OR_FOLLOWER otherwise: never a write in part, which a client
// that resends after a partial answer (kafkajs) would write twice. Other
// requests (Metadata) are still served. This is routing "broker"; with
// routing "leader" (TestOrphanBrokerRoutesProduce) a Produce goes to its
// partitions' leaders, and the rule stays for the other requests.
func TestOrphanBrokerAnswersNotLeader(t *testing.T) {
	// More partitions than the target has brokers: on a target of several
	// brokers some are led by the broker an orphan's connection reaches,
	// some not.
	ctx, target, topic, orphan, c, after := orphanSetup(t, "orphan", func(c *Config) { c.Routing = RoutingBroker })
	// One partition per request: forwarded (and written) where the broker
	// behind the orphan leads it, refused elsewhere.
	want := map[int32][]string{}
	written, refused := 0, 0
	for part := range int32(3) {
		v := fmt.Sprintf("p%d", part)
		req := rawProduce(9, -1, topic, [16]byte{}, v)
		req.Topics[0].Partitions[0].Partition = part
		switch code := c.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode; code {
		case 0:
			written++
			want[part] = []string{v}
		case kerr.NotLeaderForPartition.Code:
			refused++
		default:
			t.Fatalf("produce to partition %d through virtual broker %d: %v", part, orphan, kerr.ErrorForCode(code))
		}
	}
	if target.Fake != nil && (refused == 0 || written == 0) {
		t.Fatalf("through virtual broker %d %d partitions written alone, %d refused; want both: the broker behind it leads some", orphan, written, refused)
	}
	// All partitions in one request: written whole (one-broker target) or
	// not at all.
	req := rawProduce(9, -1, topic, [16]byte{}, "all")
	for part := int32(1); part < 3; part++ {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = part, plainBatch("all")
		req.Topics[0].Partitions = append(req.Topics[0].Partitions, rp)
	}
	codes := map[int16]int{}
	for _, rp := range c.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions {
		codes[rp.ErrorCode]++
		if rp.ErrorCode == 0 {
			want[rp.Partition] = append(want[rp.Partition], "all")
		}
	}
	if len(codes) != 1 || (refused > 0 && codes[kerr.NotLeaderForPartition.Code] != 3) {
		t.Errorf("a request across the partitions answered %v (error code: partitions), want NOT_LEADER_OR_FOLLOWER for all, or (when every partition was written alone) success for all", codes)
	}
	if md := c.roundTrip(topicMetadata(topic)).(*kmsg.MetadataResponse); len(md.Brokers) != len(after) {
		t.Fatalf("metadata through virtual broker %d: %d brokers, want %d", orphan, len(md.Brokers), len(after))
	}
	if got := held(ctx, t, target, topic); !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("target holds %q, want %q (%d written, %d refused)", got, want, written, refused)
	}
	if refused > 0 {
		// acks=0 gets no answer to carry the error: the connection is
		// closed, as a broker does, so that the client asks for metadata.
		req := rawProduce(9, 0, topic, [16]byte{}, "acks0")
		for part := int32(1); part < 3; part++ {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition, rp.Records = part, plainBatch("acks0")
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, rp)
		}
		c.send(req)
		c.expectClosed()
	}
}

// TestOrphanBrokerRoutesProduce: after a switch to a cluster of fewer
// brokers, a Produce that reaches a virtual broker with no broker behind
// it is written whole — one partition or all, acks=0 too — because each
// partition goes to its leader; the connection stays open.
func TestOrphanBrokerRoutesProduce(t *testing.T) {
	ctx, target, topic, orphan, c, after := orphanSetup(t, "orphan-routed")
	want := map[int32][]string{}
	for part := range int32(3) {
		v := fmt.Sprintf("p%d", part)
		req := rawProduce(9, -1, topic, [16]byte{}, v)
		req.Topics[0].Partitions[0].Partition = part
		if code := c.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("produce to partition %d through virtual broker %d: %v", part, orphan, kerr.ErrorForCode(code))
		}
		want[part] = []string{v}
	}
	for _, acks := range []int16{-1, 0} {
		v := fmt.Sprintf("all-acks%d", acks)
		req := rawProduce(9, acks, topic, [16]byte{}, v)
		for part := int32(1); part < 3; part++ {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition, rp.Records = part, plainBatch(v)
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, rp)
		}
		if acks == 0 {
			c.send(req)
		} else {
			for _, rp := range c.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions {
				if rp.ErrorCode != 0 {
					t.Errorf("a request across the partitions: partition %d answered %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
				}
			}
		}
		for part := range int32(3) {
			want[part] = append(want[part], v)
		}
	}
	// Still open, and answered in order after the acks=0 request.
	if md := c.roundTrip(topicMetadata(topic)).(*kmsg.MetadataResponse); len(md.Brokers) != len(after) {
		t.Fatalf("metadata through virtual broker %d: %d brokers, want %d", orphan, len(md.Brokers), len(after))
	}
	eventually(t, 10*time.Second, "every record on the target", func() error {
		if got := held(ctx, t, target, topic); !maps.EqualFunc(got, want, slices.Equal) {
			return fmt.Errorf("target holds %q, want %q", got, want)
		}
		return nil
	})
}

// TestOrphanBrokerTakesNewBroker: when the cluster grows and a virtual
// broker that had no broker behind it is given the new one, a connection
// the client opened to it before dials that broker: it does not go on
// refusing, for good, the partitions the new broker leads. (The client is
// shown the partition's stable leader all along: vleaders.go.)
func TestOrphanBrokerTakesNewBroker(t *testing.T) {
	if kafkatest.Backend() != kafkatest.BackendKfake {
		t.Skip("adds a broker to the target: kfake only")
	}
	ctx, tp, p, target := seqSetup(t, "grow", 1)
	topic := p.topic
	orphan, c, after := switchLeavingOrphan(ctx, t, tp, p)
	if orphan < 0 {
		t.Fatalf("no virtual broker without a broker after the switch (%v)", after)
	}
	// The orphan's connection reaches one of the target's brokers.
	if md := c.roundTrip(topicMetadata(topic)).(*kmsg.MetadataResponse); len(md.Brokers) != len(after) {
		t.Fatalf("metadata through virtual broker %d: %d brokers, want %d", orphan, len(md.Brokers), len(after))
	}
	shown := p.leaderOf(0)
	node, _, err := target.Fake.AddNode(-1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Fake.MoveTopicPartition(topic, 0, node); err != nil {
		t.Fatal(err)
	}
	if got := p.leaderOf(0); got != shown {
		t.Fatalf("partition 0, moved to the new broker %d, is shown led by virtual broker %d, before by %d: want its stable leader", node, got, shown)
	}
	req := rawProduce(9, -1, topic, [16]byte{}, "grown")
	if code := c.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("produce through virtual broker %d, now the new broker's: %v", orphan, kerr.ErrorForCode(code))
	}
	if got, want := held(ctx, t, target, topic)[0], []string{"grown"}; !slices.Equal(got, want) {
		t.Fatalf("target holds %q, want %q", got, want)
	}
}

// switchLeavingOrphan opens a connection to every virtual broker, as a
// client does, switches to the target and returns a virtual broker the
// target has no broker for with its connection (-1 if there is none), and
// the virtual brokers after the switch.
// orphanSetup switches to a target of fewer brokers than the source,
// holding a topic of three partitions led by both of its brokers on kfake
// (whichever one an orphan's connection reaches), and returns an orphan
// virtual broker with a connection the client opened to it before.
func orphanSetup(t *testing.T, name string, mutate ...func(*Config)) (ctx context.Context, target *kafkatest.Cluster, topic string, orphan int32, c *wireConn, after []int32) {
	t.Helper()
	ctx, tp, p, target := seqSetup(t, name, 3, mutate...)
	topic = p.topic
	if target.Fake != nil {
		for part := range int32(3) {
			if err := target.Fake.MoveTopicPartition(topic, part, part%2); err != nil {
				t.Fatal(err)
			}
		}
	}
	orphan, c, after = switchLeavingOrphan(ctx, t, tp, p)
	if orphan < 0 {
		t.Skipf("the target has as many brokers as the source (%v)", after)
	}
	return ctx, target, topic, orphan, c, after
}

func switchLeavingOrphan(ctx context.Context, t *testing.T, tp *testProxy, p *seqProducer) (orphan int32, c *wireConn, after []int32) {
	t.Helper()
	before := p.brokers()
	conns := map[int32]*wireConn{}
	for _, b := range p.metadata().Brokers {
		conns[b.NodeID] = dialWire(t, fmt.Sprintf("%s:%d", b.Host, b.Port), "orphan")
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	after = p.brokers()
	// Shown stable leaders (vleaders.go), the client may still be shown a
	// virtual broker without a broker behind it: the proxy tells.
	for _, b := range before {
		if !tp.hasBroker(tp.upstreams["target"], b) {
			return b, conns[b], after
		}
	}
	return -1, nil, after
}

// TestPartitionTwiceInOneProduce: a Produce that names a partition twice
// is answered as Kafka answers it — once for the partition, with only the
// last occurrence's batch appended (KafkaApis.handleProduceRequest keeps
// the request's partitions in a map) — before a switch and after one,
// where the first occurrence is the partition's first batch on the new
// cluster and the second must not wait behind it for an answer the same
// request carries. The partition goes on in order afterwards.
func TestPartitionTwiceInOneProduce(t *testing.T) {
	for _, tc := range []struct {
		name        string
		afterSwitch bool
	}{
		{"before a switch", false},
		{"after a switch", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, tp, p, target := seqSetup(t, "twice", 1)
			wantCode(t, "source, first batch", p.send(0, 0, 0, 5), 0)
			cluster := tp.source
			if tc.afterSwitch {
				if _, err := tp.Switch(ctx, "target"); err != nil {
					t.Fatal(err)
				}
				cluster = target
			}
			// The same sequence twice, different records: the second is
			// the one a broker keeps.
			resp := p.conn(p.leaderOf(0)).roundTrip(p.produce(0, seqBatch{0, 5, 5, 5}, seqBatch{0, 5, 100, 5})).(*kmsg.ProduceResponse)
			var answers []int16
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					answers = append(answers, rp.ErrorCode)
				}
			}
			if len(answers) != 1 || answers[0] != 0 {
				t.Fatalf("partition named twice answered %v (error codes), want once, without error", answers)
			}
			wantCode(t, "the next batch", p.send(0, 10, 10, 5), 0)
			want := slices.Concat(values(100, 105), values(10, 15))
			if !tc.afterSwitch {
				want = slices.Concat(values(0, 5), want)
			}
			if got := held(ctx, t, cluster, p.topic)[0]; !slices.Equal(got, want) {
				t.Fatalf("%s holds %q, want %q", cluster.Name, got, want)
			}
			if n := tp.Status().InFlightByAPI[keyProduce]; n != 0 {
				t.Fatalf("%d Produce still in flight", n)
			}
		})
	}
}

// TestUnparsableBatchReleasesProbe: after a switch, a Produce whose first
// batch for a partition becomes the partition's probe and whose next batch
// does not parse is refused (the connection closes); the probe ends with
// it, so the producer's next request for the partition goes through at
// once instead of waiting for an answer that will never come.
func TestUnparsableBatchReleasesProbe(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "unparsable", 1)
	wantCode(t, "source", p.send(0, 0, 0, 5), 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	bad := p.produce(0, seqBatch{0, 5, 5, 5})
	garbage := make([]byte, batchHeaderBytes)
	binary.BigEndian.PutUint32(garbage[batchLengthOff:], 1<<30) // overruns the records
	bad.Topics[0].Partitions[0].Records = append(bad.Topics[0].Partitions[0].Records, garbage...)
	c := dialWire(t, leaderAddr(t, tp, p.topic), "seq")
	c.send(bad)
	c.expectClosed()
	wantCode(t, "the same batch on a new connection", p.send(0, 5, 5, 5), 0)
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, values(5, 10)) {
		t.Fatalf("target holds %q, want 5..9", got)
	}
}

// TestBatchBehindUnansweredProbe: after a switch, a batch that waits behind
// its partition's first batch on the new cluster — whose answer does not
// come — is answered NOT_ENOUGH_REPLICAS (nothing written, retriable) once
// the hold budget has passed, instead of hanging its connection; once the
// first batch is answered the retry goes through, in order.
func TestBatchBehindUnansweredProbe(t *testing.T) {
	source, backend, topic := fakePairWithTopic(t, "unanswered", 1)
	relay := holdProducesOf(t, backend, "probe")
	tp := startProxy(t, source, relay.cluster("target"), func(c *Config) { c.HoldBudget = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newSeqProducer(t, tp, topic)
	wantCode(t, "source", p.send(0, 0, 0, 5), 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	probe := dialWire(t, leaderAddr(t, tp, topic), "probe")
	first := p.produce(0, seqBatch{0, 5, 5, 5})
	corr := probe.send(first)
	relay.waitHeld(t)
	wantCode(t, "the batch behind the unanswered first batch", p.send(0, 10, 10, 5), kerr.NotEnoughReplicas.Code)
	if got := gatheredValue(t, tp.reg, "switchyard_proxy_producer_sequence_checks_total", "outcome", "wait_expired"); got != 1 {
		t.Errorf("producer_sequence_checks_total{outcome=wait_expired} %v, want 1", got)
	}
	relay.releaseHeld()
	wantCode(t, "the first batch, answered at last", codes(t, probe.recv(first, corr))[0], 0)
	wantCode(t, "the batch behind it, retried", p.send(0, 10, 10, 5), 0)
	if got := held(ctx, t, backend, topic)[0]; !slices.Equal(got, values(5, 15)) {
		t.Fatalf("target holds %q, want 5..14 in order", got)
	}
}
