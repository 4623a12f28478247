package mirror

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// copier owns the raw source fetches and the target transactions. Each
// round fetches what the source has (read_committed) for every partition
// not backing off, produces it in one target transaction together with the
// offset-map deltas that describe it, commits, and only then applies the
// deltas in memory. A failed round is aborted — the producer epoch is
// bumped, so nothing of it survives — and redone from the last committed
// position; the partition that failed backs off, the others go on.
type copier struct {
	mr        *Mirror
	src, dst  *kgo.Client
	prod      *txnProducer
	codecs    *codecs
	srcLeader *leaderCache
	dstLeader *leaderCache
	// assign is the group assignment when scaled out, nil otherwise.
	assign *assignment
	// retryAt holds partitions backing off after a failure.
	retryAt map[tp]time.Time
	backoff map[tp]time.Duration
	// moved: rounds in a row a partition was answered "not the leader"
	// (maxMovedRetries).
	moved map[tp]int
	// begun holds the partitions the checkpoint topic holds something of:
	// their position is the mirror's. One neither begun nor seen begins
	// wherever the source begins (see resolveOutOfRange).
	begun map[tp]bool
	// seen holds the partitions the source answered at their position
	// without error since this process took them: the mirror has read
	// there, so offsets it had not committed when the source deleted them
	// are a gap (see resolveOutOfRange), whether or not it began.
	seen map[tp]bool
	// stopped holds, per partition stopped by a gap (policy stop), the
	// first offset lost: the gap is counted once, not at every retry.
	stopped map[tp]int64
}

// maxFetchWait bounds how long a fetch waits at a broker for new records.
const maxFetchWait = 100 * time.Millisecond

// maxMovesPerRound bounds the partitions one round moves without copying
// (see move), each with a checkpoint record: a mirror starting on many
// empty or purged partitions writes their beginnings over several rounds
// rather than one checkpoint batch beyond the topic's max.message.bytes.
const maxMovesPerRound = 1000

// partFetch is one partition's part of a fetch response.
type partFetch struct {
	part *partition
	resp *kmsg.FetchResponseTopicPartition
	err  error
	// outOfRange: the source answered OFFSET_OUT_OF_RANGE at the
	// partition's position; resolveOutOfRange turns it into move or err.
	outOfRange bool
	// move: the partition's position moves without copying anything.
	move *move
	// unanswered: the response had no room left for the partition.
	unanswered bool
	// moved: the broker asked no longer leads the partition (a leader
	// election, a reassignment, a broker restarting): asked again of the
	// new leader next round, not backed off as a failure.
	moved bool
}

// maxMovedRetries is how many rounds in a row a partition may be answered
// "not the leader" before it is backed off as failing: a leader that is
// not elected yet would otherwise be asked in a loop.
const maxMovedRetries = 5

// move is a change of a partition's position that copies nothing, written
// to the checkpoint topic like a copy so it survives a restart: a
// partition begins at the source's log start (lost false), or goes on
// after offsets the source deleted before they were copied (lost: a gap
// under policy continue).
type move struct {
	from, to int64
	lost     bool
}

func (c *copier) run(ctx context.Context) error {
	c.retryAt, c.backoff, c.stopped, c.moved = map[tp]time.Time{}, map[tp]time.Duration{}, map[tp]int64{}, map[tp]int{}
	if c.begun == nil {
		c.begun = map[tp]bool{}
	}
	if c.seen == nil {
		c.seen = map[tp]bool{}
	}
	defer func() {
		// Stopped mid-round: abort at once rather than leave the broker to
		// time the transaction out (it holds back the checkpoint topic).
		if c.prod.open {
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.prod.end(actx, false); err != nil {
				c.mr.log.Warn("abort the open transaction on stop", zap.Error(err))
			}
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil
		}
		err := c.round(ctx)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errFenced), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
			return fmt.Errorf("mirror %s stopped: another instance with the same name took over (or the transactional id is not authorized): %w", c.mr.cfg.Name, err)
		default:
			c.mr.mu.Lock()
			c.mr.lastErr = err.Error()
			c.mr.mu.Unlock()
			c.mr.log.Warn("copy round failed; retrying", zap.Error(err))
			// A failure not tied to a partition (coordinator, network):
			// wait before the next round.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(c.mr.cfg.RetryBackoff):
			}
		}
	}
}

// active returns the partitions to fetch this round: every one this
// process copies, minus those backing off after a failure. A partition
// whose backoff has ended but has not succeeded since goes alone, in a
// transaction of its own, so a partition that keeps failing never aborts
// the others' transactions. It also says how long until the next backoff
// ends (0 when none waits).
func (c *copier) active() ([]*partition, time.Duration) {
	now := time.Now()
	var (
		out  []*partition
		wait time.Duration
	)
	c.mr.mu.Lock()
	defer c.mr.mu.Unlock()
	for k, p := range c.mr.parts {
		if c.assign != nil && !c.assign.owns(k) {
			continue
		}
		if at, ok := c.retryAt[k]; ok {
			if now.Before(at) {
				if d := at.Sub(now); wait == 0 || d < wait {
					wait = d
				}
				continue
			}
			return []*partition{p}, 0 // on probation: alone
		}
		out = append(out, p)
	}
	return out, wait
}

// fail puts a partition into backoff and records the error.
func (c *copier) fail(p *partition, err error) {
	d := c.backoff[p.src]
	if d == 0 {
		d = c.mr.cfg.RetryBackoff
	} else {
		d = min(2*d, c.mr.cfg.RetryBackoffMax)
	}
	c.backoff[p.src] = d
	c.retryAt[p.src] = time.Now().Add(d)
	c.mr.partitionFailed(p.src, err)
	c.mr.log.Warn("partition failed; backing off", zap.Stringer("partition", p.src), zap.Duration("backoff", d), zap.Error(err))
}

// recovered clears a failing partition's error and backoff after a fetch
// that succeeded with nothing to copy.
func (c *copier) recovered(p *partition) {
	if _, failed := c.backoff[p.src]; !failed {
		return
	}
	c.succeeded(p)
	c.mr.mu.Lock()
	p.failures, p.lastErr = 0, ""
	c.mr.mu.Unlock()
	c.mr.m.failing.WithLabelValues(c.mr.cfg.Name, p.src.topic, strconv.Itoa(int(p.src.partition))).Set(0)
}

func (c *copier) succeeded(p *partition) {
	delete(c.backoff, p.src)
	delete(c.retryAt, p.src)
	delete(c.stopped, p.src)
}

// round copies one transaction's worth of records.
func (c *copier) round(ctx context.Context) error {
	if c.assign != nil {
		// A revocation waits for the round to end.
		c.assign.roundMu.Lock()
		defer c.assign.roundMu.Unlock()
		if err := c.restoreAssigned(ctx); err != nil {
			return err
		}
	}
	parts, wait := c.active()
	if len(parts) == 0 {
		if wait == 0 {
			wait = c.mr.cfg.TxnMaxInterval
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		return nil
	}
	fetched, err := c.fetch(ctx, parts)
	if err != nil {
		return err
	}
	c.resolveOutOfRange(ctx, fetched)
	c.notePositions(fetched)
	for _, f := range fetched {
		if f.err == nil && f.resp != nil {
			c.seen[f.part.src] = true
			delete(c.moved, f.part.src) // its leader answered
		}
	}

	// Split every partition's data into batches to produce.
	type work struct {
		part  *partition
		res   splitResult
		move  *move // instead of records
		delta *offsetmap.Map
	}
	var (
		works   []*work
		records int
		moves   int
	)
	maxRecords, maxBytes := c.mr.cfg.TxnMaxRecords, c.mr.cfg.TxnMaxBytes
	for _, f := range fetched {
		switch {
		case f.err != nil:
			c.fail(f.part, f.err)
			continue
		case f.unanswered, f.moved:
			continue
		case f.move != nil:
			if moves < maxMovesPerRound {
				moves++
				works = append(works, &work{part: f.part, res: splitResult{next: f.move.to}, move: f.move})
			}
			continue
		}
		next := f.part.om.Next()
		res, err := splitBatches(f.resp.RecordBatches, f.resp.AbortedTransactions, next,
			max(1, maxRecords-records), max(1, maxBytes), c.codecs)
		if err != nil {
			c.fail(f.part, fmt.Errorf("source %s: %w", f.part.src, err))
			continue
		}
		if res.next == next {
			if !c.begun[f.part.src] && moves < maxMovesPerRound {
				// The source answered at the position of a partition not
				// begun (its log starts there, nothing to copy yet):
				// commit that beginning, so that records the source deletes
				// while the mirror is down show as a gap, not as a later
				// beginning.
				moves++
				works = append(works, &work{part: f.part, res: res, move: &move{from: next, to: next}})
				continue
			}
			// Read without error, nothing to copy: a partition that
			// failed before (a fetch error, say) is not failing now. Left
			// alone it would show failing until its next record.
			c.recovered(f.part)
			continue
		}
		records += res.records
		works = append(works, &work{part: f.part, res: res})
	}
	if len(works) == 0 {
		return nil
	}

	// Target leaders first: a partition without one (a topic just created)
	// waits outside the transaction rather than aborting it.
	topicSet := map[string]bool{}
	for _, w := range works {
		topicSet[w.part.target] = true
	}
	leaders, err := c.dstLeader.leaders(ctx, sortedKeys(topicSet))
	if err != nil {
		return fmt.Errorf("target %w", err)
	}
	kept := works[:0]
	for _, w := range works {
		if _, ok := leaders[topicPart{w.part.target, w.part.src.partition}]; !ok && len(w.res.batches) > 0 {
			c.dstLeader.invalidate()
			c.fail(w.part, fmt.Errorf("target partition %s/%d has no leader yet (does the topic exist with enough partitions?)", w.part.target, w.part.src.partition))
			continue
		}
		kept = append(kept, w)
	}
	works = kept
	if len(works) == 0 {
		return nil
	}

	// One transaction: the batches, then the checkpoint deltas.
	ckpt := topicPart{c.mr.cfg.checkpointTopic(), 0}
	txnParts := []topicPart{ckpt}
	for _, w := range works {
		if len(w.res.batches) > 0 {
			txnParts = append(txnParts, topicPart{w.part.target, w.part.src.partition})
		}
	}
	abort := func(cause error) error {
		// A new epoch aborts whatever the transaction wrote and resets the
		// sequences: the round is redone from the committed position.
		c.mr.m.txns.WithLabelValues(c.mr.cfg.Name, "aborted").Inc()
		if err := c.prod.init(ctx); err != nil {
			if cause == nil {
				return fmt.Errorf("re-initialize the producer after a failed partition: %w", err)
			}
			return fmt.Errorf("%w (and re-initializing the producer: %w)", cause, err)
		}
		return cause
	}
	if err := c.prod.add(ctx, txnParts); err != nil {
		return abort(err)
	}
	var pbs []partBatches
	for _, w := range works {
		if len(w.res.batches) > 0 {
			pbs = append(pbs, partBatches{w.part, w.res.batches})
		}
	}
	bases, failed, err := c.produceAll(ctx, leaders, pbs)
	if err != nil {
		return abort(err)
	}
	if len(failed) > 0 {
		for p, perr := range failed {
			c.fail(p, perr)
		}
		return abort(nil)
	}

	// Deltas of this transaction, per partition.
	now := time.Now()
	var ckptRecords []kmsg.Record
	for _, w := range works {
		start := w.part.om.Next()
		if w.move != nil && !w.move.lost {
			start = w.move.to // the partition begins there: Start of its map
		}
		d, err := offsetmap.NewAt(start, 0)
		if err != nil {
			return abort(fmt.Errorf("offset map of %s: %w", w.part.src, err))
		}
		if w.move != nil && w.move.lost {
			if _, err := d.SkipLost(w.move.to); err != nil {
				return abort(fmt.Errorf("offset map of %s: %w", w.part.src, err))
			}
		}
		for i := range w.res.batches {
			b := &w.res.batches[i]
			base := bases[w.part][i]
			if b.srcOffsets == nil {
				if err := d.AppendRange(offsetmap.Range{Src: b.srcBase, Tgt: base, Len: int64(b.n)}); err != nil {
					return abort(fmt.Errorf("offset map of %s: %w", w.part.src, err))
				}
				continue
			}
			for j := range b.srcOffsets {
				if err := d.Record(b.srcOffsets[j], base+int64(j)); err != nil {
					return abort(fmt.Errorf("offset map of %s: %w", w.part.src, err))
				}
			}
		}
		if err := d.Advance(w.res.next); err != nil {
			return abort(fmt.Errorf("offset map of %s: %w", w.part.src, err))
		}
		v, err := d.MarshalBinary()
		if err != nil {
			return abort(err)
		}
		w.delta = d
		ckptRecords = append(ckptRecords, kmsg.Record{Key: deltaKey(w.part.src, w.part.om.Next()), Value: v})
	}
	raw := newRecordsBatch(ckptRecords, now.UnixMilli())
	c.prod.stamp(ckpt, raw, int32(len(ckptRecords)))
	if err := c.sendOne(ctx, ckpt, raw); err != nil {
		return abort(fmt.Errorf("write checkpoint: %w", err))
	}
	if c.assign != nil {
		positions := map[topicPart]int64{}
		for _, w := range works {
			positions[topicPart{w.part.target, w.part.src.partition}] = w.res.next
		}
		if err := c.assign.commitPositions(ctx, c.prod, c.mr.cfg.groupName(), positions); err != nil {
			return abort(err)
		}
	}
	if err := c.prod.end(ctx, true); err != nil {
		return abort(err)
	}
	c.mr.m.txns.WithLabelValues(c.mr.cfg.Name, "committed").Inc()

	// Committed: apply the deltas in memory.
	c.mr.mu.Lock()
	for _, w := range works {
		if err := mergeDelta(w.part.om, w.delta); err != nil {
			c.mr.mu.Unlock()
			return fmt.Errorf("apply offset map delta of %s: %w", w.part.src, err)
		}
		p := w.part
		p.failures, p.lastErr, p.lastCommit = 0, "", now
		if w.move != nil && w.move.lost {
			p.lostOffsets += w.move.to - w.move.from
			p.lastLost = offsetmap.LostRange{From: w.move.from, To: w.move.to}
		}
		c.mr.m.failing.WithLabelValues(c.mr.cfg.Name, p.src.topic, strconv.Itoa(int(p.src.partition))).Set(0)
	}
	c.mr.mu.Unlock()
	for _, w := range works {
		c.begun[w.part.src] = true
		c.noteMove(w.part, w.move)
		c.succeeded(w.part)
		c.mr.m.records.WithLabelValues(c.mr.cfg.Name, w.part.src.topic).Add(float64(w.res.records))
		c.mr.m.bytes.WithLabelValues(c.mr.cfg.Name, w.part.src.topic).Add(float64(w.res.bytes))
		for i := range w.res.batches {
			b := &w.res.batches[i]
			c.mr.m.latency.WithLabelValues(c.mr.cfg.Name).Observe(now.Sub(time.UnixMilli(b.firstTimestamp)).Seconds())
			if b.whole {
				c.mr.m.batches.WithLabelValues(c.mr.cfg.Name, "whole").Inc()
			} else {
				c.mr.m.batches.WithLabelValues(c.mr.cfg.Name, "reencoded").Inc()
			}
		}
	}
	c.mr.updateLag()
	return nil
}

// restoreAssigned restores the partitions newly assigned to this process
// from the checkpoint topic: another process may have copied them since.
// Reading to the end waits for transactions still open there.
func (c *copier) restoreAssigned(ctx context.Context) error {
	ks := c.assign.toRestore()
	if len(ks) == 0 {
		return nil
	}
	maps, err := restoreCheckpoints(ctx, c.dst, c.mr.cfg.checkpointTopic())
	if err != nil {
		return fmt.Errorf("restore assigned partitions: %w", err)
	}
	for _, k := range ks {
		c.mr.mu.Lock()
		p := c.mr.parts[k]
		c.mr.mu.Unlock()
		if p == nil {
			continue
		}
		m := maps[k]
		c.begun[k] = m != nil
		delete(c.seen, k)
		if m == nil {
			m = offsetmap.New()
		}
		b, err := m.MarshalBinary()
		if err == nil {
			err = p.om.UnmarshalBinary(b)
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", k, err)
		}
		c.mr.mu.Lock()
		p.noteRestored(m)
		c.mr.mu.Unlock()
	}
	c.assign.restored(ks)
	return nil
}

type partBatches struct {
	part    *partition
	batches []outBatch
}

// produceAll produces every partition's batches in order: a partition's
// k-th batch goes in the k-th wave, one request per target broker per wave
// (a request holds at most one batch per partition). It returns the base
// offset of every batch, the partitions that failed (their error), or an
// error that fails the whole round.
func (c *copier) produceAll(ctx context.Context, leaders map[topicPart]int32, pbs []partBatches) (map[*partition][]int64, map[*partition]error, error) {
	bases := map[*partition][]int64{}
	failed := map[*partition]error{}
	for wave := 0; ; wave++ {
		byBroker := map[int32]map[topicPart][]byte{}
		owner := map[topicPart]*partition{}
		for _, pb := range pbs {
			if wave >= len(pb.batches) || failed[pb.part] != nil {
				continue
			}
			tp := topicPart{pb.part.target, pb.part.src.partition}
			leader, ok := leaders[tp]
			if !ok {
				failed[pb.part] = fmt.Errorf("target partition %s/%d has no leader (does the topic exist with enough partitions?)", tp.topic, tp.partition)
				c.dstLeader.invalidate()
				continue
			}
			b := &pb.batches[wave]
			c.prod.stamp(tp, b.raw, b.n)
			if byBroker[leader] == nil {
				byBroker[leader] = map[topicPart][]byte{}
			}
			byBroker[leader][tp] = b.raw
			owner[tp] = pb.part
		}
		if len(byBroker) == 0 {
			return bases, failed, nil
		}
		var (
			mu      sync.Mutex
			wg      sync.WaitGroup
			sendErr error
		)
		for broker, batches := range byBroker {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.prod.send(ctx, broker, batches)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					sendErr = err
					return
				}
				for tp, r := range res {
					p := owner[tp]
					if r.err != nil {
						if isLeaderError(r.err) {
							c.dstLeader.invalidate()
						}
						failed[p] = fmt.Errorf("produce to %s/%d: %w", tp.topic, tp.partition, r.err)
						continue
					}
					bases[p] = append(bases[p], r.baseOffset)
				}
			}()
		}
		wg.Wait()
		if sendErr != nil {
			c.dstLeader.invalidate()
			return nil, nil, sendErr
		}
	}
}

// sendOne produces one batch to one partition.
func (c *copier) sendOne(ctx context.Context, tp topicPart, raw []byte) error {
	leaders, err := c.dstLeader.leaders(ctx, []string{tp.topic})
	if err != nil {
		return fmt.Errorf("target %w", err)
	}
	leader, ok := leaders[tp]
	if !ok {
		c.dstLeader.invalidate()
		return fmt.Errorf("%s/%d has no leader", tp.topic, tp.partition)
	}
	res, err := c.prod.send(ctx, leader, map[topicPart][]byte{tp: raw})
	if err != nil {
		c.dstLeader.invalidate()
		return err
	}
	if r := res[tp]; r.err != nil {
		if isLeaderError(r.err) {
			c.dstLeader.invalidate()
		}
		return r.err
	}
	return nil
}

// fetch issues one read_committed fetch per source broker for the
// partitions it leads, concurrently, and returns each partition's answer.
func (c *copier) fetch(ctx context.Context, parts []*partition) ([]partFetch, error) {
	topicSet := map[string]bool{}
	for _, p := range parts {
		topicSet[p.src.topic] = true
	}
	leaders, err := c.srcLeader.leaders(ctx, sortedKeys(topicSet))
	if err != nil {
		return nil, fmt.Errorf("source %w", err)
	}
	byBroker := map[int32][]*partition{}
	var out []partFetch
	for _, p := range parts {
		leader, ok := leaders[topicPart(p.src)]
		if !ok {
			c.srcLeader.invalidate()
			out = append(out, partFetch{part: p, err: fmt.Errorf("source partition %s has no leader", p.src)})
			continue
		}
		byBroker[leader] = append(byBroker[leader], p)
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	perPart := max(int32(1<<20), int32(min(c.mr.cfg.TxnMaxBytes, 8<<20)))
	for broker, ps := range byBroker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := kmsg.NewPtrFetchRequest()
			req.ReplicaID = -1
			// A short long-poll: a round waits for every broker, and one
			// with nothing new would hold the others' data back (a cutover
			// waits on exactly that after gating producers).
			req.MaxWaitMillis = int32(min(c.mr.cfg.TxnMaxInterval, maxFetchWait) / time.Millisecond)
			req.MinBytes = 1
			req.MaxBytes = int32(min(c.mr.cfg.TxnMaxBytes, 1<<30))
			req.IsolationLevel = 1 // read_committed
			req.SessionEpoch = -1  // no fetch session: every fetch is full
			idx := map[string]int{}
			for _, p := range ps {
				i, ok := idx[p.src.topic]
				if !ok {
					i = len(req.Topics)
					idx[p.src.topic] = i
					t := kmsg.NewFetchRequestTopic()
					t.Topic = p.src.topic
					req.Topics = append(req.Topics, t)
				}
				fp := kmsg.NewFetchRequestTopicPartition()
				fp.Partition = p.src.partition
				fp.CurrentLeaderEpoch = -1
				fp.FetchOffset = p.om.Next()
				fp.LogStartOffset = -1
				fp.PartitionMaxBytes = perPart
				req.Topics[i].Partitions = append(req.Topics[i].Partitions, fp)
			}
			resp, err := req.RequestWith(ctx, c.src.Broker(int(broker)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				c.srcLeader.invalidate()
				for _, p := range ps {
					out = append(out, partFetch{part: p, err: fmt.Errorf("fetch from source broker %d: %w", broker, err)})
				}
				return
			}
			if e := kerr.ErrorForCode(resp.ErrorCode); e != nil {
				for _, p := range ps {
					out = append(out, partFetch{part: p, err: fmt.Errorf("fetch from source broker %d: %w", broker, e)})
				}
				return
			}
			asked := make(map[tp]*partition, len(ps))
			for _, p := range ps {
				asked[p.src] = p
			}
			seen := map[tp]bool{}
			for ti := range resp.Topics {
				t := &resp.Topics[ti]
				for pi := range t.Partitions {
					rp := &t.Partitions[pi]
					k := tp{t.Topic, rp.Partition}
					p := asked[k]
					if p == nil || seen[k] {
						continue
					}
					seen[k] = true
					out = append(out, c.checkFetched(p, rp))
				}
			}
			for _, p := range ps {
				if !seen[p.src] {
					// Not in the answer: the response size limit was
					// reached before it. Nothing to do this round.
					out = append(out, partFetch{part: p, unanswered: true})
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b partFetch) int {
		if a.part.src.topic != b.part.src.topic {
			if a.part.src.topic < b.part.src.topic {
				return -1
			}
			return 1
		}
		return int(a.part.src.partition - b.part.src.partition)
	})
	return out, ctx.Err()
}

// checkFetched turns a partition's fetch error into a clear one, and marks
// a position the source no longer has for resolveOutOfRange.
func (c *copier) checkFetched(p *partition, rp *kmsg.FetchResponseTopicPartition) partFetch {
	e := kerr.ErrorForCode(rp.ErrorCode)
	switch {
	case e == nil:
		return partFetch{part: p, resp: rp}
	case errors.Is(e, kerr.OffsetOutOfRange):
		// Real Kafka answers it with -1 for the log start and the high
		// watermark: resolveOutOfRange asks the source for them.
		return partFetch{part: p, outOfRange: true}
	default:
		if isLeaderError(e) {
			c.srcLeader.invalidate()
			if isLeaderMove(e) && c.moved[p.src] < maxMovedRetries {
				c.moved[p.src]++
				return partFetch{part: p, moved: true}
			}
		}
		return partFetch{part: p, err: fmt.Errorf("fetch source %s: %w", p.src, e)}
	}
}

// isLeaderMove reports errors meaning the partition's leader is elsewhere
// now, or being elected: the next round asks the new one.
func isLeaderMove(err error) bool {
	for _, e := range []error{kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.FencedLeaderEpoch, kerr.UnknownLeaderEpoch} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// resolveOutOfRange decides, for each partition the source answered
// OFFSET_OUT_OF_RANGE, from the source's log start L read now (ListOffsets;
// the Fetch answer does not carry it) and the partition's position n:
//
//   - a partition neither begun nor seen begins at L: the offsets before it
//     are not the mirror's to copy (a consumer there would be reset by the
//     source too); one seen was read at n, so what it had not committed
//     when the source deleted it is a gap, below;
//   - L > n is a gap — [n, L) was deleted on the source (retention,
//     DeleteRecords) before it was copied — handled by the topic's policy:
//     continue skips it (a lost range in the offset map), stop fails the
//     partition with the numbers;
//   - otherwise n is beyond the source's end (the partition was recreated
//     or truncated) or the answer was transient: an error, retried.
func (c *copier) resolveOutOfRange(ctx context.Context, fs []partFetch) {
	set := map[string]bool{}
	for _, f := range fs {
		if f.outOfRange {
			set[f.part.src.topic] = true
		}
	}
	if len(set) == 0 {
		return
	}
	adm := kadm.NewClient(c.src)
	topicNames := sortedKeys(set)
	starts, err := adm.ListStartOffsets(ctx, topicNames...)
	var (
		ends    kadm.ListedOffsets
		endsErr error
	)
	for i := range fs {
		f := &fs[i]
		if !f.outOfRange {
			continue
		}
		f.outOfRange = false
		p, n := f.part, f.part.om.Next()
		start, ok := starts.Lookup(p.src.topic, p.src.partition)
		switch {
		case err != nil:
			f.err = fmt.Errorf("source %s: offset %d is out of range; reading the source's log start: %w", p.src, n, err)
			continue
		case !ok:
			f.err = fmt.Errorf("source %s: offset %d is out of range and the source lists no log start for the partition", p.src, n)
			continue
		case start.Err != nil:
			f.err = fmt.Errorf("source %s: offset %d is out of range; reading the source's log start: %w", p.src, n, start.Err)
			continue
		}
		l := start.Offset
		switch {
		case l > n && !c.begun[p.src] && !c.seen[p.src]:
			f.move = &move{from: n, to: l}
			continue
		case l > n:
			gap := offsetmap.LostRange{From: n, To: l}
			if c.mr.gapPolicy(p.src.topic) == GapContinue {
				f.move = &move{from: n, to: l, lost: true}
				continue
			}
			if from, seen := c.stopped[p.src]; !seen || from != n {
				c.stopped[p.src] = n
				c.mr.m.gaps.WithLabelValues(c.mr.cfg.Name, p.src.topic, GapStop).Inc()
			}
			f.err = fmt.Errorf("source %s: offsets %s (%d) were deleted on the source (log start %d) before they were mirrored; "+
				"gap policy %s keeps the partition stopped (a gaps.continue pattern naming the topic skips them)", p.src, gap, gap.Len(), l, GapStop)
			continue
		}
		if ends == nil && endsErr == nil {
			ends, endsErr = adm.ListEndOffsets(ctx, topicNames...)
		}
		end, ok := ends.Lookup(p.src.topic, p.src.partition)
		switch {
		case endsErr == nil && ok && end.Err == nil && n > end.Offset:
			f.err = fmt.Errorf("source %s: offset %d is beyond the source's end %d (log start %d): the partition was recreated or truncated", p.src, n, end.Offset, l)
		case endsErr == nil && ok && end.Err == nil:
			f.err = fmt.Errorf("source %s: offset %d was out of range although the source holds %d..%d; retrying", p.src, n, l, end.Offset-1)
		default:
			f.err = fmt.Errorf("source %s: offset %d is out of range (log start %d)", p.src, n, l)
		}
	}
}

// noteMove logs and counts a committed move.
func (c *copier) noteMove(p *partition, mv *move) {
	switch {
	case mv == nil || mv.from == mv.to:
	case mv.lost:
		c.mr.m.gaps.WithLabelValues(c.mr.cfg.Name, p.src.topic, GapContinue).Inc()
		c.mr.m.gapOffsets.WithLabelValues(c.mr.cfg.Name, p.src.topic).Add(float64(mv.to - mv.from))
		c.mr.log.Warn("source records deleted before they were mirrored; skipped (gap policy continue)",
			zap.Stringer("partition", p.src), zap.Stringer("lost", offsetmap.LostRange{From: mv.from, To: mv.to}),
			zap.Int64("offsets", mv.to-mv.from))
	default:
		c.mr.log.Info("partition begins at the source's log start", zap.Stringer("partition", p.src), zap.Int64("logStart", mv.to))
	}
}

// isLeaderError reports errors after which metadata must be refreshed.
func isLeaderError(err error) bool {
	for _, e := range []error{kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.UnknownTopicOrPartition,
		kerr.FencedLeaderEpoch, kerr.UnknownLeaderEpoch, kerr.NotEnoughReplicas, kerr.KafkaStorageError, kerr.OffsetNotAvailable} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
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
// of the oldest record not yet copied per partition.
func (c *copier) notePositions(fs []partFetch) {
	c.mr.mu.Lock()
	defer c.mr.mu.Unlock()
	for _, f := range fs {
		if f.err != nil || f.resp == nil {
			continue
		}
		p := f.part
		if f.resp.LastStableOffset >= 0 {
			p.hwm = f.resp.LastStableOffset
		} else if f.resp.HighWatermark >= 0 {
			p.hwm = f.resp.HighWatermark
		}
		if ts, ok := firstTimestamp(f.resp.RecordBatches, p.om.Next()); ok {
			p.oldestTS = time.UnixMilli(ts)
		}
	}
}

// firstTimestamp returns the first timestamp of the first batch at or
// after next in fetched record bytes.
func firstTimestamp(data []byte, next int64) (int64, bool) {
	for len(data) >= batchHeaderSize {
		be := binary.BigEndian
		size := int(int32(be.Uint32(data[batchLength:]))) + batchLength + 4
		if size < batchHeaderSize || size > len(data) {
			return 0, false
		}
		last := int64(be.Uint64(data)) + int64(int32(be.Uint32(data[batchLastOffsetDelta:])))
		if last >= next && data[batchMagic] == 2 && be.Uint16(data[batchAttributes:])&attrControl == 0 {
			return int64(be.Uint64(data[batchFirstTimestamp:])), true
		}
		data = data[size:]
	}
	return 0, false
}

// updateLag refreshes the lag gauges.
func (mr *Mirror) updateLag() {
	for _, ps := range mr.Status().Partitions {
		part := strconv.Itoa(int(ps.Partition))
		mr.m.lagRecords.WithLabelValues(mr.cfg.Name, ps.Topic, part).Set(float64(ps.LagRecords))
		mr.m.lagSeconds.WithLabelValues(mr.cfg.Name, ps.Topic, part).Set(ps.LagSeconds)
	}
}
