package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partitionReader reads one partition, read_committed, with Fetch requests
// of its own rather than a kgo consumer: a consumer does not say where it
// stands after offsets it skipped (aborted records, control markers,
// compacted offsets), so it cannot tell "everything below the bound has
// been read" from "nothing has arrived yet" when a range ends in such
// offsets. kgo.ProcessFetchPartition returns the exact next offset.
//
// A partitionReader is used by one goroutine.
type partitionReader struct {
	cl        *kgo.Client
	adm       *kadm.Client
	topic     string
	partition int32

	leader int32 // -1: look it up
	id     kadm.TopicID
	// logStart is the partition's log start offset as last seen; it moves
	// up when retention removes records during the read.
	logStart int64
}

func newPartitionReader(cl *kgo.Client, topic string, partition int32, logStart int64) *partitionReader {
	return &partitionReader{cl: cl, adm: kadm.NewClient(cl), topic: topic, partition: partition, leader: -1, logStart: logStart}
}

const (
	fetchMaxWait       = 500 * time.Millisecond
	fetchMaxBytes      = 16 << 20
	partitionMaxBytes  = 4 << 20
	retryBackoff       = 100 * time.Millisecond
	maxRetryBackoff    = 2 * time.Second
	noProgressAttempts = 20
)

// read calls fn, in offset order, for every committed data record at an
// offset in [from, to), starting at the log start offset if from is below
// it. It returns the offset it reached: to, or less if the partition ends
// (its last stable offset) before to. It blocks until then, ctx is done or
// an error that retrying does not cure occurs.
func (r *partitionReader) read(ctx context.Context, from, to int64, fn func(*kgo.Record)) (int64, error) {
	offset := max(from, r.logStart)
	backoff := retryBackoff
	stalled := 0
	retry := func(cause error) error {
		r.leader = -1
		select {
		case <-ctx.Done():
			return fmt.Errorf("at offset %d: %w (last error: %v)", offset, ctx.Err(), cause)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRetryBackoff)
		return nil
	}
	for offset < to {
		if err := ctx.Err(); err != nil {
			return offset, fmt.Errorf("at offset %d: %w", offset, err)
		}
		if r.leader < 0 {
			if err := r.lookupLeader(ctx); err != nil {
				if e := retry(err); e != nil {
					return offset, e
				}
				continue
			}
		}
		rp, err := r.fetch(ctx, offset)
		if err != nil {
			if e := retry(err); e != nil {
				return offset, e
			}
			continue
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset:         offset,
			IsolationLevel: kgo.ReadCommitted(),
			Topic:          r.topic,
			Partition:      r.partition,
		}, rp, kgo.DefaultDecompressor(), nil)
		switch {
		case errors.Is(fp.Err, kerr.OffsetOutOfRange):
			// Below the log start (retention moved it) or beyond the end.
			start, err := r.listStart(ctx)
			if err != nil {
				if e := retry(err); e != nil {
					return offset, e
				}
				continue
			}
			r.logStart = max(r.logStart, start)
			if offset >= r.logStart {
				return offset, nil // beyond the end
			}
			offset = r.logStart
			continue
		case fp.Err != nil && kerr.IsRetriable(fp.Err):
			if e := retry(fp.Err); e != nil {
				return offset, e
			}
			continue
		case fp.Err != nil:
			return offset, fmt.Errorf("fetch %s/%d at %d: %w", r.topic, r.partition, offset, fp.Err)
		}
		backoff = retryBackoff
		for _, rec := range fp.Records {
			if rec.Offset >= offset && rec.Offset < to {
				fn(rec)
			}
		}
		if next > offset {
			offset, stalled = next, 0
			continue
		}
		// No progress: the partition ends here (its last stable offset),
		// or the broker had nothing within fetchMaxWait.
		if fp.LastStableOffset >= 0 && offset >= fp.LastStableOffset {
			return offset, nil
		}
		if stalled++; stalled >= noProgressAttempts {
			return offset, fmt.Errorf("fetch %s/%d at %d: no progress after %d fetches (last stable offset %d)",
				r.topic, r.partition, offset, stalled, fp.LastStableOffset)
		}
	}
	return offset, nil
}

// fetch sends one Fetch for the partition at offset to its leader.
func (r *partitionReader) fetch(ctx context.Context, offset int64) (*kmsg.FetchResponseTopicPartition, error) {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(fetchMaxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = fetchMaxBytes
	req.IsolationLevel = 1 // read_committed
	req.SessionID = 0
	req.SessionEpoch = -1 // a full fetch, no session
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = r.topic
	rt.TopicID = r.id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = r.partition
	rp.FetchOffset = offset
	rp.CurrentLeaderEpoch = -1
	rp.LogStartOffset = -1
	rp.PartitionMaxBytes = partitionMaxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)

	kresp, err := r.cl.Broker(int(r.leader)).Request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d from broker %d: %w", r.topic, r.partition, offset, r.leader, err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", r.topic, r.partition, offset, err)
	}
	// One topic was asked for: named on old versions, by ID on v13+.
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if p := &resp.Topics[i].Partitions[j]; p.Partition == r.partition {
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("fetch %s/%d at %d: the response does not hold the partition", r.topic, r.partition, offset)
}

// lookupLeader finds the partition's leader and the topic's ID.
func (r *partitionReader) lookupLeader(ctx context.Context) error {
	md, err := r.adm.Metadata(ctx, r.topic)
	if err != nil {
		return fmt.Errorf("metadata of %s: %w", r.topic, err)
	}
	td, ok := md.Topics[r.topic]
	if !ok {
		return fmt.Errorf("metadata of %s: topic not returned", r.topic)
	}
	if td.Err != nil {
		return fmt.Errorf("metadata of %s: %w", r.topic, td.Err)
	}
	pd, ok := td.Partitions[r.partition]
	if !ok {
		return fmt.Errorf("metadata of %s: no partition %d", r.topic, r.partition)
	}
	if pd.Err != nil || pd.Leader < 0 {
		return fmt.Errorf("metadata of %s/%d: no leader (%v)", r.topic, r.partition, pd.Err)
	}
	r.leader, r.id = pd.Leader, td.ID
	return nil
}

func (r *partitionReader) listStart(ctx context.Context) (int64, error) {
	offs, err := r.adm.ListStartOffsets(ctx, r.topic)
	if err != nil {
		return 0, fmt.Errorf("log start offset of %s: %w", r.topic, err)
	}
	o, ok := offs.Lookup(r.topic, r.partition)
	if !ok {
		return 0, fmt.Errorf("log start offset of %s/%d: not returned", r.topic, r.partition)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("log start offset of %s/%d: %w", r.topic, r.partition, o.Err)
	}
	return o.Offset, nil
}
