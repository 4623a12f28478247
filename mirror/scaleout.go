package mirror

// Scale-out: several processes running a mirror of the same name share its
// partitions through a Kafka consumer group on the target cluster,
// switchyard-mirror-<name>, subscribed to the target topics (a target
// partition stands for the source partition copied into it). Fetching from
// the group's topics stays paused: the group only assigns.
//
// Each process writes with a transactional id of its own (name + instance),
// and every transaction also commits, through TxnOffsetCommit, the source
// position reached for each of its partitions as the group's offset of the
// target partition. The group coordinator checks the member's generation
// (KIP-447): a process that lost a partition in a rebalance without
// noticing (a zombie) has its transaction refused, so it can never write a
// partition another process copies. A process taking a partition over
// reads the checkpoint topic to its end first, waiting out transactions
// still open, so it resumes exactly where the previous owner committed.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// groupName is the consumer group of a scaled-out mirror on the target.
func (c *Config) groupName() string { return "switchyard-mirror-" + c.Name }

// assignment tracks which partitions this process copies in scale-out mode.
// In single mode it is nil and every partition is copied.
type assignment struct {
	cl  *kgo.Client // the group member (target cluster)
	log *zap.Logger

	mu      sync.Mutex
	owned   map[tp]bool // assigned and restored: copied
	restore map[tp]bool // assigned, not yet restored
	// roundMu is held by the copier for a whole round: a revocation takes
	// it to wait until no transaction holds a revoked partition.
	roundMu sync.Mutex
	// subscribed target topics.
	topics map[string]bool
	// sourceOf maps a target topic to its source topic.
	sourceOf map[string]string
	// onRevoked forgets a partition's per-partition metrics: the process
	// that copies it now reports them.
	onRevoked func(tp)
}

func newAssignment(log *zap.Logger) *assignment {
	return &assignment{log: log, owned: map[tp]bool{}, restore: map[tp]bool{}, topics: map[string]bool{}, sourceOf: map[string]string{}}
}

// groupOpts are the kgo options of the group member.
func (a *assignment) groupOpts(cfg *Config) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(cfg.groupName()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(cfg.GroupSessionTimeout),
		kgo.HeartbeatInterval(max(cfg.GroupSessionTimeout/10, 100*time.Millisecond)),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { a.assigned(m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { a.revoked(m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { a.revoked(m) }),
	}
}

// subscribe adds target topics to the group's subscription, paused.
func (a *assignment) subscribe(targetToSource map[string]string) {
	a.mu.Lock()
	var add []string
	for tgt, src := range targetToSource {
		a.sourceOf[tgt] = src
		if !a.topics[tgt] {
			a.topics[tgt] = true
			add = append(add, tgt)
		}
	}
	a.mu.Unlock()
	if len(add) > 0 {
		a.cl.PauseFetchTopics(add...)
		a.cl.AddConsumeTopics(add...)
	}
}

func (a *assignment) assigned(m map[string][]int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for tgt, ps := range m {
		src, ok := a.sourceOf[tgt]
		if !ok {
			continue
		}
		for _, p := range ps {
			a.restore[tp{src, p}] = true
		}
	}
	a.log.Info("partitions assigned", zap.Any("partitions", m))
}

// revoked stops copying the partitions, returning once no transaction in
// flight holds any of them.
func (a *assignment) revoked(m map[string][]int32) {
	a.mu.Lock()
	for tgt, ps := range m {
		src := a.sourceOf[tgt]
		for _, p := range ps {
			delete(a.owned, tp{src, p})
			delete(a.restore, tp{src, p})
			if a.onRevoked != nil {
				a.onRevoked(tp{src, p})
			}
		}
	}
	a.mu.Unlock()
	// The round in flight, if any, ends before this returns: the next one
	// no longer sees the partitions.
	a.roundMu.Lock()
	//lint:ignore SA2001 acquiring the lock is the point: it waits for the round
	a.roundMu.Unlock()
	a.log.Info("partitions revoked", zap.Any("partitions", m))
}

// toRestore returns the partitions assigned but not restored yet.
func (a *assignment) toRestore() []tp {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]tp, 0, len(a.restore))
	for k := range a.restore {
		out = append(out, k)
	}
	return out
}

// restored marks partitions restored, if still assigned.
func (a *assignment) restored(ks []tp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range ks {
		if a.restore[k] {
			delete(a.restore, k)
			a.owned[k] = true
		}
	}
}

func (a *assignment) owns(k tp) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.owned[k]
}

// commitPositions adds the group's offsets to the open transaction: for
// each target partition, the source position the transaction reaches. The
// coordinator refuses it if this member's generation is stale.
func (a *assignment) commitPositions(ctx context.Context, p *txnProducer, group string, positions map[topicPart]int64) error {
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = p.id, p.pid, p.epoch, group
	if err := retryCoordinator(ctx, "add group offsets to transaction", func() (int16, error) {
		resp, err := add.RequestWith(ctx, p.cl)
		if err != nil {
			return 0, err
		}
		return resp.ErrorCode, nil
	}); err != nil {
		return err
	}
	member, gen := a.cl.GroupMetadata()
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = p.id, group, p.pid, p.epoch
	req.Generation, req.MemberID = gen, member
	byTopic := map[string]int{}
	for tp, off := range positions {
		i, ok := byTopic[tp.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[tp.topic] = i
			t := kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic = tp.topic
			req.Topics = append(req.Topics, t)
		}
		pt := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		pt.Partition, pt.Offset, pt.LeaderEpoch = tp.partition, off, -1
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, pt)
	}
	resp, err := req.RequestWith(ctx, p.cl)
	if err != nil {
		return fmt.Errorf("commit positions to group %s: %w", group, err)
	}
	for _, t := range resp.Topics {
		for _, pt := range t.Partitions {
			if e := kerr.ErrorForCode(pt.ErrorCode); e != nil {
				if errors.Is(e, kerr.IllegalGeneration) || errors.Is(e, kerr.UnknownMemberID) || errors.Is(e, kerr.FencedInstanceID) ||
					errors.Is(e, kerr.RebalanceInProgress) {
					return fmt.Errorf("commit positions to group %s (generation %d): %w: this process no longer owns %s/%d", group, gen, e, t.Topic, pt.Partition)
				}
				return fmt.Errorf("commit positions to group %s: %s/%d: %w", group, t.Topic, pt.Partition, e)
			}
		}
	}
	return nil
}
