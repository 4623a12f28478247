package clientbed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

func runSarama(ctx context.Context, spec Spec) (Result, error) {
	res := Result{Library: "sarama " + modVersion("github.com/IBM/sarama")}
	deadline := time.Now().Add(spec.Timeout)
	if spec.Mode.Produces() {
		pr, err := saramaProduce(ctx, spec, deadline)
		if err != nil {
			return res, err
		}
		res.Produce = pr
	}
	if spec.Mode.Consumes() {
		cr, err := saramaConsume(ctx, spec, deadline)
		if err != nil {
			return res, err
		}
		res.Consume = cr
	}
	return res, nil
}

func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig() // protocol version: sarama.DefaultVersion
	cfg.ClientID = "clientbed-sarama"
	return cfg
}

// saramaProduce produces with an idempotent async producer. Sarama refuses
// idempotence unless acks=all and at most one request is in flight per
// broker (Net.MaxOpenRequests = 1).
func saramaProduce(ctx context.Context, spec Spec, deadline time.Time) (*ProduceResult, error) {
	start := time.Now()
	pr := &ProduceResult{Prefix: spec.Prefix, Errors: []string{}}
	cfg := saramaConfig()
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	p, err := sarama.NewAsyncProducer(spec.Bootstrap, cfg)
	if err != nil {
		return nil, fmt.Errorf("sarama producer: %w", err)
	}

	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var mu sync.Mutex
	reported := make(chan struct{}, spec.Records)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m := range p.Successes() {
			mu.Lock()
			pr.Acked++
			pr.Acks = append(pr.Acks, Ack{Seq: m.Metadata.(int), Partition: m.Partition, Offset: m.Offset})
			mu.Unlock()
			reported <- struct{}{}
		}
	})
	wg.Go(func() {
		for e := range p.Errors() {
			mu.Lock()
			pr.Errors = append(pr.Errors, fmt.Sprintf("seq %v: delivery failed: %v", e.Msg.Metadata, e.Err))
			mu.Unlock()
			reported <- struct{}{}
		}
	})

	sent := 0
send:
	for seq := range spec.Records {
		msg := &sarama.ProducerMessage{
			Topic:    spec.Topic,
			Key:      sarama.StringEncoder(spec.key(seq)),
			Value:    sarama.StringEncoder(spec.value(seq)),
			Metadata: seq,
		}
		for _, h := range spec.headers(seq) {
			msg.Headers = append(msg.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: []byte(h.Value)})
		}
		select {
		case p.Input() <- msg:
			sent++
		case <-ctx.Done():
			break send
		}
	}
	for got := 0; got < sent; got++ {
		select {
		case <-reported:
		case <-ctx.Done():
			mu.Lock()
			pr.Errors = append(pr.Errors, fmt.Sprintf("%d records without a delivery report: %v", sent-got, ctx.Err()))
			mu.Unlock()
			got = sent
		}
	}
	if err := p.Close(); err != nil {
		mu.Lock()
		pr.Errors = append(pr.Errors, fmt.Sprintf("close producer: %v", err))
		mu.Unlock()
	}
	wg.Wait()
	if sent < spec.Records {
		pr.Errors = append(pr.Errors, fmt.Sprintf("%d records not sent: %v", spec.Records-sent, ctx.Err()))
	}
	pr.ElapsedMS = since(start)
	return pr, nil
}

// saramaHandler collects the records of a consumer group session and stops
// the session once enough have arrived.
type saramaHandler struct {
	want int
	stop context.CancelFunc

	mu      sync.Mutex
	records []Record
}

func (h *saramaHandler) Setup(sarama.ConsumerGroupSession) error { return nil }

// Cleanup commits what the session marked: autocommit is off.
func (h *saramaHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess.Commit()
	return nil
}

func (h *saramaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			rec := Record{Partition: m.Partition, Offset: m.Offset, Key: strp(m.Key), Value: strp(m.Value), Headers: []Header{}}
			for _, hd := range m.Headers {
				rec.Headers = append(rec.Headers, Header{Key: string(hd.Key), Value: string(hd.Value)})
			}
			h.mu.Lock()
			h.records = append(h.records, rec)
			done := len(h.records) >= h.want
			h.mu.Unlock()
			sess.MarkMessage(m, "")
			if done {
				h.stop()
			}
		case <-sess.Context().Done():
			return nil
		}
	}
}

// saramaConsume consumes in a consumer group with autocommit off; the
// session's Cleanup commits the marked offsets when it ends.
func saramaConsume(ctx context.Context, spec Spec, deadline time.Time) (*ConsumeResult, error) {
	start := time.Now()
	cr := &ConsumeResult{Records: []Record{}, Errors: []string{}}
	cfg := saramaConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.MaxWaitTime = 500 * time.Millisecond
	g, err := sarama.NewConsumerGroup(spec.Bootstrap, spec.Group, cfg)
	if err != nil {
		return nil, fmt.Errorf("sarama consumer group: %w", err)
	}
	var errMu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for e := range g.Errors() {
			errMu.Lock()
			cr.Errors = append(cr.Errors, fmt.Sprintf("consumer group: %v", e))
			errMu.Unlock()
		}
	})

	runCtx, stop := context.WithDeadline(ctx, deadline)
	defer stop()
	h := &saramaHandler{want: spec.Records, stop: stop}
	for runCtx.Err() == nil {
		// Consume returns at every rebalance; go round until stopped.
		if err := g.Consume(runCtx, []string{spec.Topic}, h); err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) || runCtx.Err() != nil {
				break
			}
			errMu.Lock()
			cr.Errors = append(cr.Errors, fmt.Sprintf("consume: %v", err))
			errMu.Unlock()
			break
		}
	}
	if err := g.Close(); err != nil {
		errMu.Lock()
		cr.Errors = append(cr.Errors, fmt.Sprintf("close consumer group: %v", err))
		errMu.Unlock()
	}
	wg.Wait()

	h.mu.Lock()
	cr.Records = append(cr.Records, h.records...)
	h.mu.Unlock()
	cr.TimedOut = len(cr.Records) < spec.Records
	// Commit failures arrive on g.Errors(), collected above.
	cr.Committed = len(cr.Records) > 0 && len(cr.Errors) == 0
	cr.ElapsedMS = since(start)
	return cr, nil
}
