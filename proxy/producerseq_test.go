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

// seqProducer is a hand-driven idempotent producer on partition 0, so a
// test can send exactly the sequences and epochs a client library would.
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
	resp := c.roundTrip(init).(*kmsg.InitProducerIDResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("init producer id: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	return &seqProducer{t: t, tp: tp, meta: tp.client(t), conns: map[string]*wireConn{}, topic: topic, pid: resp.ProducerID}
}

// leader returns a connection to the virtual broker leading partition 0.
func (s *seqProducer) leader() *wireConn {
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
	leader := resp.Topics[0].Partitions[0].Leader
	for _, b := range resp.Brokers {
		if b.NodeID == leader {
			addr := fmt.Sprintf("%s:%d", b.Host, b.Port)
			if c, ok := s.conns[addr]; ok {
				return c
			}
			c := dialWire(s.t, addr, "seq")
			s.conns[addr] = c
			return c
		}
	}
	s.t.Fatalf("leader %d of %s/0 not among the brokers", leader, s.topic)
	return nil
}

// send produces values from..from+n-1 as one batch and returns the error
// code.
func (s *seqProducer) send(epoch int16, seq int32, from, n int) int16 {
	s.t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = s.topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = idempotentBatch(s.pid, epoch, seq, from, n)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := s.leader().roundTrip(req).(*kmsg.ProduceResponse)
	return resp.Topics[0].Partitions[0].ErrorCode
}

func valuesOn(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
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
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "bump")
	source.CreateTopic(t, topic, 1)
	target.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newSeqProducer(t, tp, topic)
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
