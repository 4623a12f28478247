package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// copyLoop owns the source consumer and the target's transactional
// producer. Each round polls what the source has (read_committed), copies
// it in one target transaction together with the offset-map deltas that
// describe it, commits, and only then applies the deltas in memory. A
// failed round is aborted and retried from the last committed position, so
// the target never holds a record whose progress was not committed with it.
func (mr *Mirror) copyLoop(ctx context.Context, prod *kgo.Client) error {
	mr.mu.Lock()
	start := map[string]map[int32]kgo.Offset{}
	for k, p := range mr.parts {
		setStart(start, k, p.om)
	}
	mr.mu.Unlock()
	cons, err := mr.client(mr.cfg.SourceBootstrap,
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records are delivered (and not copied) so the position
		// moves past transaction markers: caught up means Next == LSO.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	if err != nil {
		return fmt.Errorf("source consumer: %w", err)
	}
	defer cons.Close()

	backoff := mr.cfg.RetryBackoff
	for {
		select {
		case added := <-mr.newParts:
			add := map[string]map[int32]kgo.Offset{}
			mr.mu.Lock()
			for _, k := range added {
				setStart(add, k, mr.parts[k].om)
			}
			mr.mu.Unlock()
			cons.AddConsumePartitions(add)
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		err := mr.copyRound(ctx, cons, prod)
		switch {
		case err == nil:
			backoff = mr.cfg.RetryBackoff
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
			return fmt.Errorf("mirror %s stopped: another instance with the same name took over (or the transactional id is not authorized): %w", mr.cfg.Name, err)
		default:
			mr.mu.Lock()
			mr.lastErr = err.Error()
			mr.mu.Unlock()
			mr.log.Warn("copy round failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, mr.cfg.RetryBackoffMax)
		}
	}
}

func setStart(dst map[string]map[int32]kgo.Offset, k tp, om *offsetmap.Map) {
	if dst[k.topic] == nil {
		dst[k.topic] = map[int32]kgo.Offset{}
	}
	off := kgo.NewOffset().AtStart()
	if om.Next() > 0 {
		off = kgo.NewOffset().At(om.Next())
	}
	dst[k.topic][k.partition] = off
}

// copied is one record written in the current transaction.
type copied struct {
	part     *partition
	src, tgt int64
	ts       time.Time
	bytes    int
}

// copyRound copies one transaction's worth of records.
func (mr *Mirror) copyRound(ctx context.Context, cons, prod *kgo.Client) error {
	pollCtx, cancel := context.WithTimeout(ctx, mr.cfg.TxnMaxInterval)
	fs := cons.PollRecords(pollCtx, mr.cfg.TxnMaxRecords)
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	mr.notePositions(fs)
	var fetchErr error
	fs.EachError(func(topic string, partition int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		mr.partitionFailed(tp{topic, partition}, err)
		fetchErr = fmt.Errorf("fetch %s/%d: %w", topic, partition, err)
	})
	if fs.NumRecords() == 0 {
		return fetchErr
	}

	// Everything fetched, in order per partition. Control records only
	// advance the position.
	advances := map[tp]*advance{}
	var (
		mu      sync.Mutex
		results []copied
		perr    error
		wg      sync.WaitGroup
	)
	if err := prod.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	fs.EachRecord(func(r *kgo.Record) {
		k := tp{r.Topic, r.Partition}
		pa := advances[k]
		if pa == nil {
			// First record of this partition in the round: look the
			// partition up once, not for every record.
			mr.mu.Lock()
			p := mr.parts[k]
			mr.mu.Unlock()
			if p == nil {
				return
			}
			pa = &advance{part: p}
			advances[k] = pa
		}
		p := pa.part
		pa.next = r.Offset + 1
		if r.Attrs.IsControl() {
			return
		}
		out := &kgo.Record{Topic: p.target, Partition: r.Partition, Key: r.Key, Value: r.Value,
			Headers: r.Headers, Timestamp: r.Timestamp}
		src, ts := r.Offset, r.Timestamp
		size := len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			size += len(h.Key) + len(h.Value)
		}
		wg.Add(1)
		prod.Produce(ctx, out, func(rec *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if perr == nil {
					perr = fmt.Errorf("produce to %s/%d: %w", rec.Topic, rec.Partition, err)
				}
				return
			}
			results = append(results, copied{part: p, src: src, tgt: rec.Offset, ts: ts, bytes: size})
		})
	})
	wg.Wait()
	if perr != nil {
		return mr.abort(ctx, cons, prod, advances, perr)
	}

	// Deltas of this transaction, per partition, in source order.
	deltas := map[*partition]*offsetmap.Map{}
	sortCopied(results)
	for _, c := range results {
		d := deltas[c.part]
		if d == nil {
			d = offsetmap.New()
			deltas[c.part] = d
		}
		if err := d.Record(c.src, c.tgt); err != nil {
			return mr.abort(ctx, cons, prod, advances, fmt.Errorf("offset map of %s: %w", c.part.src, err))
		}
	}
	var checkpoints []*kgo.Record
	for _, pa := range advances {
		d := deltas[pa.part]
		if d == nil {
			d = offsetmap.New() // only control records: the position moves
		}
		if err := d.Advance(pa.next); err != nil {
			return mr.abort(ctx, cons, prod, advances, fmt.Errorf("offset map of %s: %w", pa.part.src, err))
		}
		deltas[pa.part] = d
		v, err := d.MarshalBinary()
		if err != nil {
			return mr.abort(ctx, cons, prod, advances, err)
		}
		first := pa.part.om.Next()
		checkpoints = append(checkpoints, &kgo.Record{Topic: mr.cfg.checkpointTopic(), Partition: 0,
			Key: deltaKey(pa.part.src, first), Value: v})
	}
	if err := prod.ProduceSync(ctx, checkpoints...).FirstErr(); err != nil {
		return mr.abort(ctx, cons, prod, advances, fmt.Errorf("write checkpoint: %w", err))
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return mr.abort(ctx, cons, prod, advances, fmt.Errorf("commit transaction: %w", err))
	}
	mr.m.txns.WithLabelValues(mr.cfg.Name, "committed").Inc()

	// Committed: apply the deltas in memory.
	now := time.Now()
	mr.mu.Lock()
	for p, d := range deltas {
		if err := mergeDelta(p.om, d); err != nil {
			mr.mu.Unlock()
			return fmt.Errorf("apply offset map delta of %s: %w", p.src, err)
		}
		p.failures, p.lastErr, p.lastCommit = 0, "", now
		mr.m.failing.WithLabelValues(mr.cfg.Name, p.src.topic, strconv.Itoa(int(p.src.partition))).Set(0)
	}
	mr.mu.Unlock()
	for _, c := range results {
		mr.m.records.WithLabelValues(mr.cfg.Name, c.part.src.topic).Inc()
		mr.m.bytes.WithLabelValues(mr.cfg.Name, c.part.src.topic).Add(float64(c.bytes))
		mr.m.latency.WithLabelValues(mr.cfg.Name).Observe(now.Sub(c.ts).Seconds())
	}
	mr.updateLag()
	return fetchErr
}

// advance is how far a transaction moves a partition's source position.
type advance struct {
	part *partition
	next int64
}

// abort aborts the transaction and rewinds the consumer of every partition
// it touched to the last committed position, so the round is redone.
func (mr *Mirror) abort(ctx context.Context, cons, prod *kgo.Client, touched map[tp]*advance, cause error) error {
	mr.m.txns.WithLabelValues(mr.cfg.Name, "aborted").Inc()
	if err := prod.AbortBufferedRecords(ctx); err != nil {
		mr.log.Warn("abort buffered records", zap.Error(err))
	}
	if err := prod.EndTransaction(ctx, kgo.TryAbort); err != nil {
		cause = fmt.Errorf("%w (and aborting the transaction: %v)", cause, err)
	}
	rewind := map[string]map[int32]kgo.EpochOffset{}
	mr.mu.Lock()
	for k, a := range touched {
		if rewind[k.topic] == nil {
			rewind[k.topic] = map[int32]kgo.EpochOffset{}
		}
		rewind[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: a.part.om.Next()}
	}
	mr.mu.Unlock()
	for k := range touched {
		mr.partitionFailed(k, cause)
	}
	cons.SetOffsets(rewind)
	return cause
}

// partitionFailed records a failure of a partition in status and metrics.
func (mr *Mirror) partitionFailed(k tp, err error) {
	mr.mu.Lock()
	p := mr.parts[k]
	if p != nil {
		p.failures++
		p.lastErr = err.Error()
	}
	mr.mu.Unlock()
	mr.m.partErrors.WithLabelValues(mr.cfg.Name, k.topic).Inc()
	if p != nil {
		mr.m.failing.WithLabelValues(mr.cfg.Name, k.topic, strconv.Itoa(int(k.partition))).Set(1)
	}
}

// notePositions records the source's last stable offsets and the timestamp
// of the first record fetched per partition (the oldest not yet copied).
func (mr *Mirror) notePositions(fs kgo.Fetches) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		p := mr.parts[tp{fp.Topic, fp.Partition}]
		if p == nil || fp.Err != nil {
			return
		}
		if fp.LastStableOffset >= 0 {
			p.hwm = fp.LastStableOffset
		} else if fp.HighWatermark >= 0 {
			p.hwm = fp.HighWatermark
		}
		if len(fp.Records) > 0 {
			p.oldestTS = fp.Records[0].Timestamp
		}
	})
}

// updateLag refreshes the lag gauges.
func (mr *Mirror) updateLag() {
	for _, ps := range mr.Status().Partitions {
		part := strconv.Itoa(int(ps.Partition))
		mr.m.lagRecords.WithLabelValues(mr.cfg.Name, ps.Topic, part).Set(float64(ps.LagRecords))
		mr.m.lagSeconds.WithLabelValues(mr.cfg.Name, ps.Topic, part).Set(ps.LagSeconds)
	}
}

// sortCopied orders results by partition and source offset: produce
// callbacks of different partitions interleave.
func sortCopied(cs []copied) {
	slices.SortFunc(cs, func(a, b copied) int {
		if a.part != b.part {
			return cmp.Compare(a.part.src.String(), b.part.src.String())
		}
		return cmp.Compare(a.src, b.src)
	})
}
