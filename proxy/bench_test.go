package proxy

// Benchmarks of the proxy's per-request hot paths, without sockets:
//
//	go test -run '^$' -bench . -benchmem ./proxy
//
// SetBytes is the frame size, so MB/s is the rate at which one core moves
// frames through the function.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// benchProxy is a proxy that never runs: New does not dial, so its
// rewrite paths can be called directly. Its source cluster has three
// brokers and knows the topics given.
func benchProxy(b testing.TB, topics map[string][16]byte) (*Proxy, *upstream) {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	cfg.Active = "source"
	p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	u := p.upstreams["source"]
	md := kmsg.NewPtrMetadataResponse()
	md.Version = 12
	for i := int32(0); i < 3; i++ {
		br := kmsg.NewMetadataResponseBroker()
		br.NodeID, br.Host, br.Port = i+1, "10.0.0.1", 9092+i
		md.Brokers = append(md.Brokers, br)
	}
	for name, id := range topics {
		t := kmsg.NewMetadataResponseTopic()
		t.Topic, t.TopicID = kmsg.StringPtr(name), id
		md.Topics = append(md.Topics, t)
		// What a client learned from metadata through the proxy.
		p.topicNames.Store(virtualTopicID(p.clusterID, name), name)
	}
	u.learnMetadata(md)
	p.mapBrokers(u) // virtual brokers (ephemeral listeners, closed by Close)
	return p, u
}

func topicID(i int) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint64(id[:8], 0xfeedface)
	binary.BigEndian.PutUint64(id[8:], uint64(i+1))
	return id
}

// recordBatch is a magic v2 batch of n uncompressed records with values of
// size bytes, as a producer writes it.
func recordBatch(baseOffset int64, n, size int) []byte {
	var recs []byte
	val := bytes.Repeat([]byte{'x'}, size)
	for i := 0; i < n; i++ {
		var r []byte
		r = append(r, 0)                      // attributes
		r = kbin.AppendVarlong(r, 0)          // timestamp delta
		r = kbin.AppendVarint(r, int32(i))    // offset delta
		r = kbin.AppendVarint(r, -1)          // null key
		r = kbin.AppendVarint(r, int32(size)) // value
		r = append(r, val...)
		r = kbin.AppendVarint(r, 0) // headers
		recs = kbin.AppendVarint(recs, int32(len(r)))
		recs = append(recs, r...)
	}
	b := make([]byte, 61, 61+len(recs))
	binary.BigEndian.PutUint64(b[0:], uint64(baseOffset))
	binary.BigEndian.PutUint32(b[8:], uint32(49+len(recs)))
	binary.BigEndian.PutUint32(b[12:], 7) // partitionLeaderEpoch
	b[16] = 2
	binary.BigEndian.PutUint32(b[23:], uint32(n-1))        // lastOffsetDelta
	binary.BigEndian.PutUint64(b[27:], 1_700_000_000_000)  // baseTimestamp
	binary.BigEndian.PutUint64(b[35:], 1_700_000_000_000)  // maxTimestamp
	binary.BigEndian.PutUint64(b[43:], 4000)               // producerId
	binary.BigEndian.PutUint32(b[53:], uint32(baseOffset)) // baseSequence
	binary.BigEndian.PutUint32(b[57:], uint32(n))          // records
	b = append(b, recs...)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// batches is about total bytes of 16-record batches of 1 KiB values.
func batches(total int) []byte {
	var out []byte
	for off := int64(0); len(out) < total; off += 16 {
		out = append(out, recordBatch(off, 16, 1024)...)
	}
	return out
}

// requestFrameFor encodes a request with its header, as a client sends it
// (without the size prefix).
func requestFrameFor(req kmsg.Request, corrID int32) []byte {
	h := requestHeader{Key: req.Key(), Version: req.GetVersion(), CorrID: corrID,
		ClientID: kmsg.StringPtr("bench-client"), Flexible: req.IsFlexible()}
	return requestFrame(h, req.AppendTo(nil))
}

func mustHeader(b testing.TB, frame []byte) requestHeader {
	b.Helper()
	h, err := parseRequestHeader(frame)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// produceRequest is a Produce of 4 partitions × 256 KiB of batches.
func produceRequest(version int16, topic string, id [16]byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = version, -1, 30000
	t := kmsg.NewProduceRequestTopic()
	t.Topic, t.TopicID = topic, id
	for p := int32(0); p < 4; p++ {
		pt := kmsg.NewProduceRequestTopicPartition()
		pt.Partition, pt.Records = p, batches(256<<10)
		t.Partitions = append(t.Partitions, pt)
	}
	req.Topics = append(req.Topics, t)
	return req
}

// BenchmarkReadFrameParseHeader reads one size-prefixed frame from a reader
// into a reused buffer and parses its header: what the client read loop
// does for every request.
func BenchmarkReadFrameParseHeader(b *testing.B) {
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 12
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"Metadata-v12", requestFrameFor(md, 1)},
		{"Produce-v9-1MiB", requestFrameFor(produceRequest(9, "bench", [16]byte{}), 1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			wire := binary.BigEndian.AppendUint32(nil, uint32(len(tc.frame)))
			wire = append(wire, tc.frame...)
			r := bytes.NewReader(wire)
			var buf []byte
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(wire)
				frame, err := readFrame(r, 100<<20, buf)
				if err != nil {
					b.Fatal(err)
				}
				buf = frame[:0]
				if _, err := parseRequestHeader(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRewriteResponseFetch rewrites a Fetch v16 response carrying
// 1 MiB of record batches in 4 partitions: topic ids, leader ids and
// epochs, broker endpoints, and — with an epoch offset (after a switch) —
// the partitionLeaderEpoch of every batch.
func BenchmarkRewriteResponseFetch(b *testing.B) {
	const topic = "bench"
	p, u := benchProxy(b, map[string][16]byte{topic: topicID(0)})
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 16
	t := kmsg.NewFetchResponseTopic()
	t.TopicID = topicID(0)
	for i := int32(0); i < 4; i++ {
		pt := kmsg.NewFetchResponseTopicPartition()
		pt.Partition, pt.HighWatermark, pt.LastStableOffset, pt.LogStartOffset = i, 1<<20, 1<<20, 0
		pt.CurrentLeader.LeaderID, pt.CurrentLeader.LeaderEpoch = 1+i%3, 7
		pt.RecordBatches = batches(256 << 10)
		t.Partitions = append(t.Partitions, pt)
	}
	resp.Topics = append(resp.Topics, t)
	// The common case has no NodeEndpoints (in-place fast path); a response
	// naming brokers (after a leader change) takes the full rewrite.
	steady := kbin.AppendInt32(nil, 42)
	steady = append(steady, 0) // response header v1 tags
	steady = resp.AppendTo(steady)
	for i := int32(0); i < 3; i++ {
		br := kmsg.NewFetchResponseBroker()
		br.NodeID, br.Host, br.Port = i+1, "10.0.0.1", 9092+i
		resp.Brokers = append(resp.Brokers, br)
	}
	withBrokers := kbin.AppendInt32(nil, 42)
	withBrokers = append(withBrokers, 0)
	withBrokers = resp.AppendTo(withBrokers)
	pr := &pendingReq{hdr: requestHeader{Key: keyFetch, Version: 16, CorrID: 42, Known: true, Flexible: true}}
	ctx := context.Background()
	for _, shape := range []struct {
		name  string
		frame []byte
	}{{"in-place", steady}, {"node-endpoints", withBrokers}} {
		for _, offset := range []int32{0, 5} {
			b.Run(fmt.Sprintf("v16-1MiB/%s/epochOffset=%d", shape.name, offset), func(b *testing.B) {
				u.epochOffset.Store(offset)
				b.SetBytes(int64(len(shape.frame) + 4))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.rewriteResponse(ctx, u, pr, shape.frame); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	u.epochOffset.Store(0)
}

// BenchmarkRewriteRequestProduce rewrites a Produce of 1 MiB of batches:
// v13 names topics by id (decoded, translated, re-encoded); v9 names them
// and passes through untouched after acks is read. The idempotent variant
// carries a producer id the proxy issued: each batch's sequences are read
// to follow it into the response.
func BenchmarkRewriteRequestProduce(b *testing.B) {
	const topic = "bench"
	p, u := benchProxy(b, map[string][16]byte{topic: topicID(0)})
	c := &clientConn{p: p}
	ctx := context.Background()
	const pid = 4242
	p.pids.issued(u, -1, pid, 0)
	for _, tc := range []struct {
		v          int16
		idempotent bool
	}{{13, false}, {9, false}, {9, true}} {
		name := fmt.Sprintf("v%d-1MiB", tc.v)
		if tc.idempotent {
			name += "-idempotent"
		}
		b.Run(name, func(b *testing.B) {
			req := produceRequest(tc.v, topic, virtualTopicID(p.clusterID, topic))
			if tc.idempotent {
				for i := range req.Topics[0].Partitions {
					setProducerID(req.Topics[0].Partitions[i].Records, pid)
				}
			}
			frame := requestFrameFor(req, 7)
			hdr := mustHeader(b, frame)
			b.SetBytes(int64(len(frame) + 4))
			b.ReportAllocs()
			for b.Loop() {
				rw, err := p.rewriteRequest(ctx, c, u, hdr, frame)
				if err != nil || !rw.expect || rw.local != nil || rw.frame == nil {
					b.Fatalf("rewrite: %v", err)
				}
			}
		})
	}
}

// setProducerID gives every batch in b a producer id, epoch 0 and
// consecutive sequences.
func setProducerID(b []byte, pid int64) {
	seq := int32(0)
	for len(b) >= batchHeaderBytes {
		total := 12 + int(binary.BigEndian.Uint32(b[batchLengthOff:]))
		batch := b[:total]
		b = b[total:]
		binary.BigEndian.PutUint64(batch[batchPIDOff:], uint64(pid))
		binary.BigEndian.PutUint16(batch[batchEpochOff:], 0)
		binary.BigEndian.PutUint32(batch[batchSeqOff:], uint32(seq))
		seq += int32(binary.BigEndian.Uint32(batch[batchLastOffsetDeltaOff:])) + 1
	}
}

// BenchmarkRewriteResponseMetadata rewrites a Metadata v12 response of
// 3 brokers and 100 topics of 6 partitions: learning brokers and topic ids,
// translating node ids, replicas, epochs, topic ids and addresses.
func BenchmarkRewriteResponseMetadata(b *testing.B) {
	topics := map[string][16]byte{}
	for i := 0; i < 100; i++ {
		topics[fmt.Sprintf("topic-%03d", i)] = topicID(i)
	}
	p, u := benchProxy(b, topics)
	resp := kmsg.NewPtrMetadataResponse()
	resp.Version = 12
	resp.ClusterID = kmsg.StringPtr("real-cluster")
	resp.ControllerID = 1
	for i := int32(0); i < 3; i++ {
		br := kmsg.NewMetadataResponseBroker()
		br.NodeID, br.Host, br.Port = i+1, "10.0.0.1", 9092+i
		resp.Brokers = append(resp.Brokers, br)
	}
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("topic-%03d", i)
		t := kmsg.NewMetadataResponseTopic()
		t.Topic, t.TopicID = kmsg.StringPtr(name), topicID(i)
		for pi := int32(0); pi < 6; pi++ {
			pt := kmsg.NewMetadataResponseTopicPartition()
			pt.Partition, pt.Leader, pt.LeaderEpoch = pi, 1+pi%3, 3
			pt.Replicas = []int32{1 + pi%3, 1 + (pi+1)%3, 1 + (pi+2)%3}
			pt.ISR = append([]int32(nil), pt.Replicas...)
			t.Partitions = append(t.Partitions, pt)
		}
		resp.Topics = append(resp.Topics, t)
	}
	frame := kbin.AppendInt32(nil, 9)
	frame = append(frame, 0)
	frame = resp.AppendTo(frame)
	pr := &pendingReq{hdr: requestHeader{Key: keyMetadata, Version: 12, CorrID: 9, Known: true, Flexible: true}}
	ctx := context.Background()
	b.SetBytes(int64(len(frame) + 4))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.rewriteResponse(ctx, u, pr, frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteRequestSmall is the request path with small requests of
// ten topics (one partition each, one 100-byte record): the per-topic cost
// of what the proxy learns from a request (usage.go) shows here, where a
// 1 MiB Produce would hide it.
func BenchmarkRewriteRequestSmall(b *testing.B) {
	const n = 10
	topics := map[string][16]byte{}
	for i := range n {
		topics[fmt.Sprintf("bench-%d", i)] = topicID(i)
	}
	p, u := benchProxy(b, topics)
	c := &clientConn{p: p}
	ctx := context.Background()
	produce := func(v int16) kmsg.Request {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = v, -1, 30000
		for i := range n {
			name := fmt.Sprintf("bench-%d", i)
			t := kmsg.NewProduceRequestTopic()
			t.Topic, t.TopicID = name, virtualTopicID(p.clusterID, name)
			pt := kmsg.NewProduceRequestTopicPartition()
			pt.Records = recordBatch(0, 1, 100)
			t.Partitions = append(t.Partitions, pt)
			req.Topics = append(req.Topics, t)
		}
		return req
	}
	fetch := func(v int16) kmsg.Request {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.MaxWaitMillis, req.MaxBytes = v, 500, 50<<20
		for i := range n {
			name := fmt.Sprintf("bench-%d", i)
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = name, virtualTopicID(p.clusterID, name)
			pt := kmsg.NewFetchRequestTopicPartition()
			pt.CurrentLeaderEpoch, pt.FetchOffset, pt.PartitionMaxBytes = 3, 1000, 1<<20
			t.Partitions = append(t.Partitions, pt)
			req.Topics = append(req.Topics, t)
		}
		return req
	}
	for _, tc := range []struct {
		name string
		req  kmsg.Request
	}{
		{"produce-v9", produce(9)},
		{"produce-v13", produce(13)},
		{"fetch-v12", fetch(12)},
		{"fetch-v13", fetch(13)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			frame := requestFrameFor(tc.req, 7)
			hdr := mustHeader(b, frame)
			hdr.Checked = true
			// The request is patched in place (topic ids): each round
			// rewrites a fresh copy.
			work := make([]byte, len(frame))
			b.SetBytes(int64(len(frame) + 4))
			b.ReportAllocs()
			for b.Loop() {
				copy(work, frame)
				rw, err := p.rewriteRequest(ctx, c, u, hdr, work)
				if err != nil || rw.local != nil || rw.frame == nil {
					b.Fatalf("rewrite: %v", err)
				}
			}
		})
	}
}

// BenchmarkUsageTopics is what usage.go adds to a request of ten topics:
// the clock read once, and per topic the lookup and the conditional
// store of its last-use time (names as Produce v3-12 carries them, and
// topic ids as Fetch v13+ does, resolved to names first).
func BenchmarkUsageTopics(b *testing.B) {
	const n = 10
	topics := map[string][16]byte{}
	var names []string
	var ids [][16]byte
	for i := range n {
		name := fmt.Sprintf("bench-%d", i)
		topics[name] = topicID(i)
		names = append(names, name)
	}
	p, _ := benchProxy(b, topics)
	for _, name := range names {
		ids = append(ids, virtualTopicID(p.clusterID, name))
	}
	b.Run("names", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now := p.usage.now().UnixNano()
			for _, name := range names {
				p.usage.produced(name, now)
			}
		}
	})
	b.Run("ids", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now := p.usage.now().UnixNano()
			for _, id := range ids {
				if name, ok := p.topicNames.Load(id); ok {
					if t := p.usage.topic(name.(string)); t != nil {
						p.usage.touch(&t.lastFetched, now)
					}
				}
			}
		}
	})
}

// BenchmarkRouteProduce decides where a Produce of 1 MiB in 4 partitions
// goes (route.go): all led by the connection's own broker (the steady
// state: sent whole), or two by another broker (cut in two parts, record
// bytes not copied); numbered for the fence of re-sends, as acks=1 is.
func BenchmarkRouteProduce(b *testing.B) {
	const topic = "bench"
	p, u := benchProxy(b, map[string][16]byte{topic: topicID(0)})
	c := &clientConn{p: p, log: zap.NewNop()}
	adm := admission{u: u, gen: 0}
	up := &upConn{u: u, node: 1}
	other := &upConn{u: u, node: 2}
	other.lastUsed.Store(math.MaxInt64) // never idle here
	c.links = map[int32]*upConn{2: other}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		leaders []int32
		parts   int
	}{{"one-leader", []int32{1, 1, 1, 1}, 1}, {"two-leaders", []int32{1, 2, 1, 2}, 2}} {
		md := kmsg.NewPtrMetadataResponse()
		md.Version = 12
		mt := kmsg.NewMetadataResponseTopic()
		mt.Topic, mt.TopicID = kmsg.StringPtr(topic), topicID(0)
		for i, l := range tc.leaders {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition, mp.Leader = int32(i), l
			mt.Partitions = append(mt.Partitions, mp)
		}
		md.Topics = append(md.Topics, mt)
		u.learnMetadata(md)
		frame := requestFrameFor(produceRequest(9, topic, topicID(0)), 7)
		hdr := mustHeader(b, frame)
		// The rewrite's walk, which the proxy hands to routeProduce.
		w, err := walkProduce(frame[hdr.BodyOffset:], hdr.Version)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			c.fence = nil
			var seq uint64
			for b.Loop() {
				// acks=1: numbered for the fence, the previous request
				// answered.
				seq++
				c.answeredSeq.Store(seq - 1)
				_, parts, _ := c.routeProduce(ctx, adm, up, hdr, frame, &w, seq)
				if len(parts) != tc.parts && (tc.parts != 1 || parts != nil) {
					b.Fatalf("%d parts", len(parts))
				}
			}
		})
	}
}

// BenchmarkPlanFetch decides whether a consumer's full fetch of 10
// partitions is routed (fetchroute.go): all led by the connection's own
// broker (the steady state: forwarded as it is, no allocation), or half by
// another broker (planned, then fetched from both).
func BenchmarkPlanFetch(b *testing.B) {
	const topic = "bench"
	p, u := benchProxy(b, map[string][16]byte{topic: topicID(0)})
	c := &clientConn{p: p, log: zap.NewNop()}
	adm := admission{u: u, gen: 0}
	up := &upConn{u: u, node: 1}
	for _, tc := range []struct {
		name   string
		other  int32
		routed bool
	}{{"one-leader", 1, false}, {"two-leaders", 2, true}} {
		md := kmsg.NewPtrMetadataResponse()
		md.Version = 12
		mt := kmsg.NewMetadataResponseTopic()
		mt.Topic, mt.TopicID = kmsg.StringPtr(topic), topicID(0)
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.ReplicaID, req.MaxWaitMillis, req.MaxBytes = 12, -1, 500, 50<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		for i := range int32(10) {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition, mp.Leader = i, 1
			if i%2 == 1 {
				mp.Leader = tc.other
			}
			mt.Partitions = append(mt.Partitions, mp)
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = i, 1000, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		md.Topics = append(md.Topics, mt)
		u.learnMetadata(md)
		req.Topics = append(req.Topics, rt)
		hdr := requestHeader{Key: keyFetch, Version: 12}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				if plan := c.planFetch(adm, up, hdr, req, now); (plan != nil) != tc.routed {
					b.Fatalf("routed %v, want %v", plan != nil, tc.routed)
				}
			}
		})
	}
}

// BenchmarkRoutedFetchAnswer is what a routed fetch of 1 MiB costs the
// writer (fetchroute.go): two brokers' answers of 2 partitions × 256 KiB
// decoded into per-partition answers, merged into one response (records
// copied) and translated — against BenchmarkRewriteResponseFetch's
// in-place path for the same bytes from one broker.
func BenchmarkRoutedFetchAnswer(b *testing.B) {
	const topic = "bench"
	p, u := benchProxy(b, map[string][16]byte{topic: topicID(0)})
	c := &clientConn{p: p, log: zap.NewNop()}
	fr := c.fetchRouter()
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.ReplicaID = 16, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.TopicID = topicID(0)
	plan := &fetchPlan{u: u, req: req}
	subs := []*subFetch{{version: 16, asked: map[topicPartition]int64{}}, {version: 16, asked: map[topicPartition]int64{}}}
	answers := []*kmsg.FetchResponse{kmsg.NewPtrFetchResponse(), kmsg.NewPtrFetchResponse()}
	for i := range int32(4) {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = i
		rt.Partitions = append(rt.Partitions, rp)
		k := topicPartition{topic, i}
		plan.parts = append(plan.parts, fetchPlanPart{key: k, pi: int(i), node: 1 + i%2})
		subs[i%2].asked[k] = 0
		resp := answers[i%2]
		resp.Version = 16
		if len(resp.Topics) == 0 {
			t := kmsg.NewFetchResponseTopic()
			t.TopicID = topicID(0)
			resp.Topics = append(resp.Topics, t)
		}
		pt := kmsg.NewFetchResponseTopicPartition()
		pt.Partition, pt.HighWatermark, pt.LastStableOffset, pt.LogStartOffset = i, 1<<20, 1<<20, 0
		pt.RecordBatches = batches(256 << 10)
		resp.Topics[0].Partitions = append(resp.Topics[0].Partitions, pt)
	}
	req.Topics = append(req.Topics, rt)
	frames := make([][]byte, 2)
	size := 0
	for i, resp := range answers {
		frames[i] = resp.AppendTo(append(kbin.AppendInt32(nil, 0), 0))
		size += len(frames[i])
	}
	hdr := requestHeader{Key: keyFetch, Version: 16, CorrID: 42, Known: true, Flexible: true}
	pr := &pendingReq{hdr: hdr, fetch: plan}
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	work := make([][]byte, len(frames))
	for b.Loop() {
		got := make([]*fetchAnswer, len(plan.parts))
		for s, sf := range subs {
			// Translated in place as they arrive: each round on a copy,
			// as a read from the broker is a new buffer.
			work[s] = append(work[s][:0], frames[s]...)
			as, _, err := c.subFetchAnswers(ctx, u, sf, work[s])
			if err != nil {
				b.Fatal(err)
			}
			for i := range plan.parts {
				if a := as[plan.parts[i].key]; a != nil {
					got[i] = a
				}
			}
		}
		if hdr.Version >= 12 {
			if pieces := c.spliceRoutedFetch(fr, plan, hdr, got); len(pieces) == 0 {
				b.Fatal("no answer")
			}
			continue
		}
		frame := c.mergeRoutedFetch(fr, plan, hdr, got)
		if _, err := p.rewriteResponse(ctx, u, pr, frame); err != nil {
			b.Fatal(err)
		}
	}
}
