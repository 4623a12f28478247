package proxy

import (
	"context"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// TestStaleBatchAfterClientEpochBump: after a switch the client bumps its
// epoch itself (librdkafka and sarama do, after OUT_OF_ORDER_SEQUENCE_NUMBER)
// on one partition while a batch of the old epoch for another partition is
// still on its way. The old-epoch batch must not leave its sequence base
// behind for the new epoch: the new epoch's first batch there (sequence 0)
// is written, not answered as a duplicate of what the source wrote.
func TestStaleBatchAfterClientEpochBump(t *testing.T) {
	ctx, p, target := switchAfterEpochZero(t, "stale")
	wantCode(t, "target, partition 1 follows on", p.sendTo(p.leaderOf(1), 0, seqBatch{1, 5, 105, 5})[1], 0)
	// The client bumps its epoch: sequences from 0.
	wantCode(t, "target, partition 1 in epoch 1", p.sendTo(p.leaderOf(1), 1, seqBatch{1, 0, 110, 5})[1], 0)
	// A batch of epoch 0 for partition 0, sent before the bump: the
	// cluster decides (kfake fences it; real Kafka, with no state for the
	// producer on the partition, writes it).
	stale := p.sendTo(p.leaderOf(0), 0, seqBatch{0, 5, 5, 5})[0]
	// Partition 0 in epoch 1: sequence 0.
	wantCode(t, "target, partition 0 in epoch 1", p.sendTo(p.leaderOf(0), 1, seqBatch{0, 0, 10, 5})[0], 0)
	wantCode(t, "target, partition 0 in epoch 1, next", p.sendTo(p.leaderOf(0), 1, seqBatch{0, 5, 15, 5})[0], 0)
	want := values(10, 20)
	if stale == 0 {
		want = values(5, 20)
	}
	if got := held(ctx, t, target, p.topic)[0]; !slices.Equal(got, want) {
		t.Fatalf("target partition 0 holds %q, want %q (the old epoch's batch answered %v)", got, want, kerr.ErrorForCode(stale))
	}
}

// TestStaleBatchKeepsNewerEpochAcked: a batch of an older client epoch that
// the cluster writes late must not replace what the newer epoch had
// acknowledged on the partition, or the next switch would judge that
// epoch's resends against sequence 0 and write them again.
func TestStaleBatchKeepsNewerEpochAcked(t *testing.T) {
	p := &Proxy{pids: &producerIDs{}}
	e := &producerEntry{}
	tp := topicPartition{topic: "t", partition: 0}
	p.settleBatch(&sentBatch{e: e, tp: tp, epoch: 1, first: 0, last: 4}, 0)
	p.settleBatch(&sentBatch{e: e, tp: tp, epoch: 0, first: 5, last: 9}, 0)
	if got := p.pids.ackedNext(e, tp, 1); got != 5 {
		t.Fatalf("epoch 1 acknowledged next %d after a stale epoch-0 batch was written, want 5", got)
	}
	p.settleBatch(&sentBatch{e: e, tp: tp, epoch: 1, first: 5, last: 9}, kerr.DuplicateSequenceNumber.Code)
	p.settleBatch(&sentBatch{e: e, tp: tp, epoch: 1, first: 0, last: 4}, 0) // an older answer, late
	if got := p.pids.ackedNext(e, tp, 1); got != 10 {
		t.Fatalf("epoch 1 acknowledged next %d, want 10", got)
	}
	p.settleBatch(&sentBatch{e: e, tp: tp, epoch: 2, first: 0, last: 2}, 0)
	if got := p.pids.ackedNext(e, tp, 2); got != 3 {
		t.Fatalf("epoch 2 acknowledged next %d, want 3", got)
	}
}

// TestLeaderKeptWhenReplicaNotAvailable: a partition whose follower is
// offline is answered REPLICA_NOT_AVAILABLE in Metadata with its leader
// named; the proxy still knows who leads it (an orphan virtual broker
// forwards what its broker leads).
func TestLeaderKeptWhenReplicaNotAvailable(t *testing.T) {
	u := &upstream{brokers: map[int32]string{}, topicIDs: map[string][16]byte{}, topicNames: map[[16]byte]string{},
		leaderEpochs: map[string][]int32{}, leaders: map[string][]int32{}}
	resp := kmsg.NewPtrMetadataResponse()
	resp.Version = 12
	rt := kmsg.NewMetadataResponseTopic()
	rt.Topic = kmsg.StringPtr("t")
	for i, c := range []struct {
		code   int16
		leader int32
	}{{0, 1}, {kerr.ReplicaNotAvailable.Code, 2}, {kerr.LeaderNotAvailable.Code, -1}} {
		rp := kmsg.NewMetadataResponseTopicPartition()
		rp.Partition, rp.ErrorCode, rp.Leader = int32(i), c.code, c.leader
		rt.Partitions = append(rt.Partitions, rp)
	}
	resp.Topics = append(resp.Topics, rt)
	u.learnMetadata(resp)
	for partition, want := range []int32{1, 2, -1} {
		got, ok := u.leader("t", int32(partition))
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("partition %d: leader %d, want %d", partition, got, want)
		}
	}
}

// TestStaleResendOfWrittenBatch: a batch of an older client epoch that the
// source already wrote, resent after the client bumped its epoch on the
// target, is answered as written: the target has no state for that epoch
// on the partition, and would write it again (real Kafka does).
func TestStaleResendOfWrittenBatch(t *testing.T) {
	ctx, p, target := switchAfterEpochZero(t, "staleresend")
	wantCode(t, "target, partition 1 in epoch 1", p.sendTo(p.leaderOf(1), 1, seqBatch{1, 0, 110, 5})[1], 0)
	// Epoch 0's batch for partition 0 again, sequences 0-4: the source
	// wrote it.
	wantCode(t, "target, the source's epoch-0 batch resent", p.sendTo(p.leaderOf(0), 0, seqBatch{0, 0, 0, 5})[0], 0)
	// Overlapping what the source wrote: refused.
	wantCode(t, "target, epoch 0 overlapping", p.sendTo(p.leaderOf(0), 0, seqBatch{0, 3, 3, 5})[0], kerr.OutOfOrderSequenceNumber.Code)
	wantCode(t, "target, partition 0 in epoch 1", p.sendTo(p.leaderOf(0), 1, seqBatch{0, 0, 10, 5})[0], 0)
	if got, want := held(ctx, t, target, p.topic)[0], values(10, 15); !slices.Equal(got, want) {
		t.Fatalf("target partition 0 holds %q, want %q", got, want)
	}
}

// switchAfterEpochZero writes, in client epoch 0, values 0-4 to partition 0
// and 100-104 to partition 1 of a new two-partition topic on the source
// (sequences 0-4 each), then switches to the target; the producer's
// connections are new ones there.
func switchAfterEpochZero(t *testing.T, name string) (context.Context, *seqProducer, *kafkatest.Cluster) {
	ctx, tp, p, target := seqSetup(t, name, 2)
	wantCode(t, "source, partition 0", p.sendTo(p.leaderOf(0), 0, seqBatch{0, 0, 0, 5})[0], 0)
	wantCode(t, "source, partition 1", p.sendTo(p.leaderOf(1), 0, seqBatch{1, 0, 100, 5})[1], 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	p.conns = map[string]*wireConn{}
	return ctx, p, target
}
