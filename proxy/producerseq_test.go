package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// idempotentBatch encodes a magic v2 batch of an idempotent producer with
// values tagged from..from+n-1 and the given first sequence.
func idempotentBatch(pid int64, epoch int16, seq int32, from, n int) []byte {
	var recs []byte
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(fmt.Sprint(from + i))}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(n - 1),
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq,
		NumRecords: int32(n), Records: recs}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// seqProducer is a hand-driven idempotent producer, so a test can send
// exactly the sequences and epochs a client library would.
type seqProducer struct {
	t     *testing.T
	tp    *testProxy
	meta  *kgo.Client
	conns map[string]*wireConn
	topic string
	pid   int64
}

func newSeqProducer(t *testing.T, tp *testProxy, topic string) *seqProducer {
	c := dialWire(t, tp.Addr().String(), "seq")
	init := kmsg.NewPtrInitProducerIDRequest()
	init.Version = 4
	init.ProducerID, init.ProducerEpoch = -1, -1
	// A broker that just started answers COORDINATOR_LOAD_IN_PROGRESS
	// until its transaction state is loaded; a client retries that.
	deadline := time.Now().Add(30 * time.Second)
	resp := c.roundTrip(init).(*kmsg.InitProducerIDResponse)
	for kerr.IsRetriable(kerr.ErrorForCode(resp.ErrorCode)) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // the broker offers nothing to wait on
		resp = c.roundTrip(init).(*kmsg.InitProducerIDResponse)
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("init producer id: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	return &seqProducer{t: t, tp: tp, meta: tp.client(t), conns: map[string]*wireConn{}, topic: topic, pid: resp.ProducerID}
}

// metadata returns the proxy's metadata of the producer's topic.
func (s *seqProducer) metadata() *kmsg.MetadataResponse {
	s.t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(s.topic)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, s.meta)
	if err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) == 0 {
		s.t.Fatalf("metadata of %s: %v", s.topic, err)
	}
	return resp
}

// leaderOf returns the virtual broker leading a partition.
func (s *seqProducer) leaderOf(partition int32) int32 {
	s.t.Helper()
	for _, p := range s.metadata().Topics[0].Partitions {
		if p.Partition == partition {
			return p.Leader
		}
	}
	s.t.Fatalf("%s/%d not in the metadata", s.topic, partition)
	return -1
}

// brokers returns the virtual brokers' ids.
func (s *seqProducer) brokers() []int32 {
	s.t.Helper()
	var ids []int32
	for _, b := range s.metadata().Brokers {
		ids = append(ids, b.NodeID)
	}
	return ids
}

// conn returns a connection to a virtual broker, one per broker.
func (s *seqProducer) conn(node int32) *wireConn {
	s.t.Helper()
	for _, b := range s.metadata().Brokers {
		if b.NodeID == node {
			addr := fmt.Sprintf("%s:%d", b.Host, b.Port)
			if c, ok := s.conns[addr]; ok {
				return c
			}
			c := dialWire(s.t, addr, "seq")
			s.conns[addr] = c
			return c
		}
	}
	s.t.Fatalf("broker %d not in the metadata", node)
	return nil
}

// seqBatch is one partition's batch in a Produce request.
type seqBatch struct {
	partition int32
	seq       int32
	from, n   int
}

// produce builds a Produce request of one batch per partition.
func (s *seqProducer) produce(epoch int16, batches ...seqBatch) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = s.topic
	for _, b := range batches {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = b.partition
		rp.Records = idempotentBatch(s.pid, epoch, b.seq, b.from, b.n)
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// codes returns a Produce response's error code per partition.
func codes(t *testing.T, resp kmsg.Response) map[int32]int16 {
	t.Helper()
	out := map[int32]int16{}
	for _, rt := range resp.(*kmsg.ProduceResponse).Topics {
		for _, p := range rt.Partitions {
			out[p.Partition] = p.ErrorCode
		}
	}
	return out
}

// send produces values from..from+n-1 as one batch and returns the error
// code.
func (s *seqProducer) send(epoch int16, seq int32, from, n int) int16 {
	s.t.Helper()
	return s.sendTo(s.leaderOf(0), epoch, seqBatch{0, seq, from, n})[0]
}

// sendTo produces one request to a virtual broker and returns the error
// code per partition.
func (s *seqProducer) sendTo(node int32, epoch int16, batches ...seqBatch) map[int32]int16 {
	s.t.Helper()
	return codes(s.t, s.conn(node).roundTrip(s.produce(epoch, batches...)))
}

func valuesOn(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, n int) []string {
	t.Helper()
	return partitionValues(ctx, t, c, topic, 0, n)
}

// partitionValues reads a partition's first n values; it fails if the
// partition holds fewer, or more once n were read and the end is reached.
func partitionValues(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, partition int32, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	var out []string
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s holds %d records, want %d: %q", c.Name, len(out), n, out)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	return out
}

// TestRemapFollowsClientEpochBump: a client that bumps its epoch itself
// after a switch (sarama does, after OUT_OF_ORDER_SEQUENCE_NUMBER, without
// InitProducerId) restarts its sequences at 0; the proxy bumps the epoch on
// the new cluster with it, so the batch is written, not wrapped into an
// endless OUT_OF_ORDER_SEQUENCE_NUMBER.
func TestRemapFollowsClientEpochBump(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "bump", 1)
	topic := p.topic
	if ec := p.send(0, 0, 0, 5); ec != 0 {
		t.Fatalf("on the source: %v", kerr.ErrorForCode(ec))
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	if ec := p.send(0, 5, 5, 5); ec != 0 {
		t.Fatalf("after the switch: %v", kerr.ErrorForCode(ec))
	}
	// The client's own epoch bump: epoch 1, sequences from 0.
	if ec := p.send(1, 0, 10, 5); ec != 0 {
		t.Fatalf("after the client's epoch bump: %v", kerr.ErrorForCode(ec))
	}
	if ec := p.send(1, 5, 15, 5); ec != 0 {
		t.Fatalf("next batch in the bumped epoch: %v", kerr.ErrorForCode(ec))
	}
	got := valuesOn(ctx, t, target, topic, 15)
	for i, v := range got {
		if v != fmt.Sprint(5+i) {
			t.Fatalf("target holds %q, want 5..19 in order", got)
		}
	}
}
