package clientbed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// commitTimeout bounds a final commit made after the consume deadline.
const commitTimeout = 15 * time.Second

func runFranz(ctx context.Context, spec Spec) (Result, error) {
	res := Result{Library: "franz-go " + modVersion("github.com/twmb/franz-go")}
	deadline := time.Now().Add(spec.Timeout)
	if spec.Mode.Produces() {
		pr, err := franzProduce(ctx, spec, deadline)
		if err != nil {
			return res, err
		}
		res.Produce = pr
	}
	if spec.Mode.Consumes() {
		cr, err := franzConsume(ctx, spec, deadline)
		if err != nil {
			return res, err
		}
		res.Consume = cr
	}
	return res, nil
}

// franzProduce produces with franz-go's defaults: idempotent, acks=all.
func franzProduce(ctx context.Context, spec Spec, deadline time.Time) (*ProduceResult, error) {
	start := time.Now()
	pr := &ProduceResult{Prefix: spec.Prefix, Errors: []string{}}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(spec.Bootstrap...),
		kgo.ClientID("clientbed-franz-go"),
		kgo.DefaultProduceTopic(spec.Topic),
		kgo.RecordDeliveryTimeout(time.Until(deadline)),
	)
	if err != nil {
		return nil, fmt.Errorf("franz-go producer: %w", err)
	}
	defer cl.Close()

	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for seq := range spec.Records {
		rec := &kgo.Record{Key: []byte(spec.key(seq)), Value: []byte(spec.value(seq))}
		for _, h := range spec.headers(seq) {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
		}
		wg.Add(1)
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				pr.Errors = append(pr.Errors, fmt.Sprintf("seq %d: delivery failed: %v", seq, err))
				return
			}
			pr.Acked++
			pr.Acks = append(pr.Acks, Ack{Seq: seq, Partition: r.Partition, Offset: r.Offset})
		})
	}
	wg.Wait()
	pr.ElapsedMS = since(start)
	return pr, nil
}

// franzConsume consumes in a group (classic protocol, franz-go's default)
// with autocommit off, then commits what it consumed.
func franzConsume(ctx context.Context, spec Spec, deadline time.Time) (*ConsumeResult, error) {
	start := time.Now()
	cr := &ConsumeResult{Records: []Record{}, Errors: []string{}}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(spec.Bootstrap...),
		kgo.ClientID("clientbed-franz-go"),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(spec.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("franz-go consumer: %w", err)
	}
	defer cl.Close()

	pollCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for len(cr.Records) < spec.Records {
		fs := cl.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			cr.TimedOut = true
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			cr.Errors = append(cr.Errors, fmt.Sprintf("fetch %s/%d: %v", topic, p, err))
		})
		fs.EachRecord(func(r *kgo.Record) {
			rec := Record{Partition: r.Partition, Offset: r.Offset, Key: strp(r.Key), Value: strp(r.Value), Headers: []Header{}}
			for _, h := range r.Headers {
				rec.Headers = append(rec.Headers, Header{Key: h.Key, Value: string(h.Value)})
			}
			cr.Records = append(cr.Records, rec)
		})
		if cr.TimedOut {
			break
		}
	}
	if len(cr.Records) > 0 {
		cctx, ccancel := context.WithTimeout(ctx, commitTimeout)
		err := cl.CommitUncommittedOffsets(cctx)
		ccancel()
		if err != nil {
			cr.Errors = append(cr.Errors, fmt.Sprintf("commit: %v", err))
		} else {
			cr.Committed = true
		}
	}
	cr.ElapsedMS = since(start)
	return cr, nil
}

// strp returns b as a *string, nil for a nil (null) slice.
func strp(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
