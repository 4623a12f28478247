package proxy

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestStaleBatchAfterClientEpochBump: after a switch the client bumps its
// epoch itself (librdkafka and sarama do, after OUT_OF_ORDER_SEQUENCE_NUMBER)
// on one partition while a batch of the old epoch for another partition is
// still on its way. The old-epoch batch must not leave its sequence base
// behind for the new epoch: the new epoch's first batch there (sequence 0)
// is written, not answered as a duplicate of what the source wrote.
func TestStaleBatchAfterClientEpochBump(t *testing.T) {
	ctx, tp, p, target := seqSetup(t, "stale", 2)
	wantCode(t, "source, partition 0", p.sendTo(p.leaderOf(0), 0, seqBatch{0, 0, 0, 5})[0], 0)
	wantCode(t, "source, partition 1", p.sendTo(p.leaderOf(1), 0, seqBatch{1, 0, 100, 5})[1], 0)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	p.conns = map[string]*wireConn{}
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
