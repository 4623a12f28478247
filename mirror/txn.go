package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// clientVersions caps the request versions of the mirror's clients. The
// producer below speaks the transaction protocol of KIP-98 (partitions added
// with AddPartitionsToTxn, the epoch fixed until InitProducerId bumps it):
// EndTxn v5 and Produce v12 opt a client into KIP-890's transactions v2,
// where every EndTxn bumps the epoch; brokers keep serving v1 to clients
// that do not ask for v2. Raw fetches name topics, which Fetch v13+ no
// longer does (topic ids only).
func clientVersions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(kmsg.Produce.Int16(), 11)
	v.SetMaxKeyVersion(kmsg.EndTxn.Int16(), 4)
	v.SetMaxKeyVersion(kmsg.Fetch.Int16(), 12)
	v.SetMaxKeyVersion(kmsg.TxnOffsetCommit.Int16(), 4) // v5+ is transactions v2 as well
	return v
}

// topicPart names a target topic partition.
type topicPart struct {
	topic     string
	partition int32
}

// txnProducer writes record batches to the target in Kafka transactions of
// one transactional id, over raw protocol requests: batches fetched from
// the source are produced as they are (only their producer fields and CRC
// change), which kgo's record-level producer cannot do.
type txnProducer struct {
	cl      *kgo.Client
	id      string
	timeout time.Duration

	pid   int64
	epoch int16
	seq   map[topicPart]int32 // next sequence per partition, this epoch
	added map[topicPart]bool  // partitions in the open transaction
	open  bool
}

// errFenced: another producer with the same transactional id took over.
var errFenced = errors.New("fenced: another mirror instance with the same name took over")

func newTxnProducer(cl *kgo.Client, id string, timeout time.Duration) *txnProducer {
	return &txnProducer{cl: cl, id: id, timeout: timeout, pid: -1, epoch: -1}
}

// retryCoordinator retries a transaction-coordinator request while the
// coordinator answers with a transient error: a transaction of this id
// still completing (CONCURRENT_TRANSACTIONS), the coordinator loading or
// moving.
func retryCoordinator(ctx context.Context, what string, do func() (int16, error)) error {
	backoff := 10 * time.Millisecond
	for {
		code, err := do()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		kerrV := kerr.ErrorForCode(code)
		switch {
		case kerrV == nil:
			return nil
		case errors.Is(kerrV, kerr.ConcurrentTransactions), errors.Is(kerrV, kerr.CoordinatorLoadInProgress),
			errors.Is(kerrV, kerr.CoordinatorNotAvailable), errors.Is(kerrV, kerr.NotCoordinator),
			errors.Is(kerrV, kerr.RequestTimedOut):
		case errors.Is(kerrV, kerr.ProducerFenced), errors.Is(kerrV, kerr.InvalidProducerEpoch):
			return fmt.Errorf("%s: %w (%w)", what, errFenced, kerrV)
		default:
			return fmt.Errorf("%s: %w", what, kerrV)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %w)", what, ctx.Err(), kerrV)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// init obtains the producer id and a new epoch. Any transaction a previous
// holder of the id left open is aborted by the coordinator, and one being
// completed is finished first, so after init everything committed under
// the id is fully visible.
func (p *txnProducer) init(ctx context.Context) error {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &p.id
	req.TransactionTimeoutMillis = int32(p.timeout / time.Millisecond)
	if p.pid >= 0 {
		// KIP-360: a producer that knows its id and epoch bumps it.
		req.ProducerID, req.ProducerEpoch = p.pid, p.epoch
	}
	var resp *kmsg.InitProducerIDResponse
	err := retryCoordinator(ctx, "init producer id "+p.id, func() (int16, error) {
		r, err := req.RequestWith(ctx, p.cl)
		if err != nil {
			return 0, err
		}
		resp = r
		return r.ErrorCode, nil
	})
	if err != nil && p.pid >= 0 && !errors.Is(err, errFenced) && ctx.Err() == nil {
		// An old broker may not know KIP-360 bumping: start over.
		req.ProducerID, req.ProducerEpoch = -1, -1
		err = retryCoordinator(ctx, "init producer id "+p.id, func() (int16, error) {
			r, err := req.RequestWith(ctx, p.cl)
			if err != nil {
				return 0, err
			}
			resp = r
			return r.ErrorCode, nil
		})
	}
	if err != nil {
		return err
	}
	p.pid, p.epoch = resp.ProducerID, resp.ProducerEpoch
	p.seq = map[topicPart]int32{}
	p.added = map[topicPart]bool{}
	p.open = false
	return nil
}

// add adds partitions to the transaction, beginning it if needed.
func (p *txnProducer) add(ctx context.Context, parts []topicPart) error {
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch = p.id, p.pid, p.epoch
	byTopic := map[string]int{}
	for _, tp := range parts {
		if p.added[tp] {
			continue
		}
		i, ok := byTopic[tp.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[tp.topic] = i
			t := kmsg.NewAddPartitionsToTxnRequestTopic()
			t.Topic = tp.topic
			req.Topics = append(req.Topics, t)
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, tp.partition)
	}
	if len(req.Topics) == 0 {
		return nil
	}
	err := retryCoordinator(ctx, "add partitions to transaction", func() (int16, error) {
		resp, err := req.RequestWith(ctx, p.cl)
		if err != nil {
			return 0, err
		}
		var code int16
		for _, t := range resp.Topics {
			for _, pt := range t.Partitions {
				// OPERATION_NOT_ATTEMPTED only accompanies another
				// partition's error: report that one.
				if pt.ErrorCode != 0 && (code == 0 || code == kerr.OperationNotAttempted.Code) {
					code = pt.ErrorCode
				}
			}
		}
		return code, nil
	})
	if err != nil {
		return err
	}
	for _, tp := range parts {
		p.added[tp] = true
	}
	p.open = true
	return nil
}

// nextSeq returns the sequence after n records from seq, wrapping past
// MaxInt32 to 0 as brokers do.
func nextSeq(seq, n int32) int32 {
	if seq > math.MaxInt32-n {
		return n - (math.MaxInt32 - seq) - 1
	}
	return seq + n
}

// stamp sets the producer fields of a batch for partition tp and advances
// the partition's sequence.
func (p *txnProducer) stamp(tp topicPart, raw []byte, n int32) {
	seq := p.seq[tp]
	setProducer(raw, p.pid, p.epoch, seq)
	p.seq[tp] = nextSeq(seq, n)
}

// produceResult is the outcome of one batch.
type produceResult struct {
	baseOffset int64
	err        error
}

// send produces one request's batches — at most one batch per partition,
// as Produce v3+ requires — to broker, and returns each partition's
// outcome. The batches must be stamped.
func (p *txnProducer) send(ctx context.Context, broker int32, batches map[topicPart][]byte) (map[topicPart]produceResult, error) {
	req := kmsg.NewPtrProduceRequest()
	req.TransactionID = &p.id
	req.Acks = -1
	req.TimeoutMillis = 30000
	byTopic := map[string]int{}
	for tp, raw := range batches {
		i, ok := byTopic[tp.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[tp.topic] = i
			t := kmsg.NewProduceRequestTopic()
			t.Topic = tp.topic
			req.Topics = append(req.Topics, t)
		}
		pt := kmsg.NewProduceRequestTopicPartition()
		pt.Partition = tp.partition
		pt.Records = raw
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, pt)
	}
	resp, err := req.RequestWith(ctx, p.cl.Broker(int(broker)))
	if err != nil {
		return nil, fmt.Errorf("produce to broker %d: %w", broker, err)
	}
	out := make(map[topicPart]produceResult, len(batches))
	for _, t := range resp.Topics {
		for _, pt := range t.Partitions {
			tp := topicPart{t.Topic, pt.Partition}
			r := produceResult{baseOffset: pt.BaseOffset}
			if e := kerr.ErrorForCode(pt.ErrorCode); e != nil {
				r.err = e
				if pt.ErrorMessage != nil && *pt.ErrorMessage != "" {
					r.err = fmt.Errorf("%w: %s", e, *pt.ErrorMessage)
				}
			}
			out[tp] = r
		}
	}
	for tp := range batches {
		if _, ok := out[tp]; !ok {
			out[tp] = produceResult{err: fmt.Errorf("broker %d did not answer for %s/%d", broker, tp.topic, tp.partition)}
		}
	}
	return out, nil
}

// end commits or aborts the open transaction.
func (p *txnProducer) end(ctx context.Context, commit bool) error {
	if !p.open {
		return nil
	}
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = p.id, p.pid, p.epoch, commit
	what := "commit transaction"
	if !commit {
		what = "abort transaction"
	}
	err := retryCoordinator(ctx, what, func() (int16, error) {
		resp, err := req.RequestWith(ctx, p.cl)
		if err != nil {
			return 0, err
		}
		return resp.ErrorCode, nil
	})
	if err != nil {
		return err
	}
	p.open = false
	clear(p.added)
	return nil
}

// leaderCache answers which broker leads a partition, from kgo's metadata
// cache, refreshing on demand.
type leaderCache struct {
	cl *kgo.Client

	mu    sync.Mutex
	stale bool
}

// invalidate makes the next lookup fetch fresh metadata (a leader moved).
func (l *leaderCache) invalidate() {
	l.mu.Lock()
	l.stale = true
	l.mu.Unlock()
}

// leaders returns the leader of every partition of the topics.
func (l *leaderCache) leaders(ctx context.Context, topics []string) (map[topicPart]int32, error) {
	l.mu.Lock()
	limit := 30 * time.Second
	if l.stale {
		limit, l.stale = time.Nanosecond, false
	}
	l.mu.Unlock()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := l.cl.RequestCachedMetadata(ctx, req, limit)
	if err != nil {
		l.invalidate()
		return nil, fmt.Errorf("metadata: %w", err)
	}
	out := map[topicPart]int32{}
	for _, t := range resp.Topics {
		if t.Topic == nil || t.ErrorCode != 0 {
			continue
		}
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 && p.Leader >= 0 {
				out[topicPart{*t.Topic, p.Partition}] = p.Leader
			}
		}
	}
	return out, nil
}
