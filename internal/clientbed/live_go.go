package clientbed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The in-process live clients: franz-go and sarama, each with a producer
// and a group consumer of its own, both with the library's defaults apart
// from what the library requires for idempotence.

// goLive wires the stop functions of an in-process live instance: the
// producer loop runs until stopProduce or stop, then waits for its
// delivery reports (flush) and calls markProduced; the consumer loop runs
// until stop. finish is called once both returned.
func goLive(ctx context.Context, l *Live, produce func(ctx context.Context) (int, error), consume func(ctx context.Context) error) {
	prodCtx, stopProd := context.WithCancel(ctx)
	consCtx, stopCons := context.WithCancel(ctx)
	l.stopProduce = stopProd
	l.stop = func() { stopProd(); stopCons() }
	var wg sync.WaitGroup
	var perr, cerr error
	wg.Go(func() {
		sent, err := produce(prodCtx)
		perr = err
		if err == nil {
			l.markProduced(sent)
		}
	})
	wg.Go(func() { cerr = consume(consCtx) })
	go func() {
		wg.Wait()
		stopProd()
		stopCons()
		l.finish(errors.Join(perr, cerr))
	}()
}

// pace sends seq = 0, 1, ... one every interval until ctx ends or send
// reports it could not, and returns how many it sent.
func pace(ctx context.Context, interval time.Duration, send func(seq int) bool) int {
	t := time.NewTicker(interval)
	defer t.Stop()
	seq := 0
	for {
		if !send(seq) {
			return seq
		}
		seq++
		select {
		case <-ctx.Done():
			return seq
		case <-t.C:
		}
	}
}

func startFranzLive(ctx context.Context, spec LiveSpec) (*Live, error) {
	l := newLive(FranzGo, spec)
	l.setLibrary("franz-go " + modVersion("github.com/twmb/franz-go"))
	id := kgo.ClientID("clientbed-live-" + spec.Prefix)
	logger := kgo.WithLogger(kgo.BasicLogger(l.log, kgo.LogLevelInfo, func() string { return time.Now().Format("15:04:05.000 ") }))
	// Defaults: idempotent, acks=all, unlimited retries within the default
	// delivery timeout (none).
	prod, err := kgo.NewClient(kgo.SeedBrokers(spec.Bootstrap...), id, logger, kgo.DefaultProduceTopic(spec.Topic))
	if err != nil {
		return nil, fmt.Errorf("franz-go producer: %w", err)
	}
	// Defaults: autocommit every 5s, and on revoke / leave.
	copts := []kgo.Opt{kgo.SeedBrokers(spec.Bootstrap...), id, logger,
		kgo.ConsumerGroup(spec.Group), kgo.ConsumeTopics(spec.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitCallback(func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				l.addError(LiveError{Side: SideConsume, Seq: -1, Msg: fmt.Sprintf("autocommit: %v", err)})
			}
		})}
	switch spec.GroupProtocol {
	case "":
	case GroupProtocolConsumer:
		// franz-go speaks KIP-848 when asked and the balancer is one the
		// broker implements (sticky or range).
		copts = append(copts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.CooperativeStickyBalancer()))
	default:
		prod.Close()
		return nil, fmt.Errorf("franz-go consumer: group protocol %q: want %q or none", spec.GroupProtocol, GroupProtocolConsumer)
	}
	if spec.InstanceID != "" {
		copts = append(copts, kgo.InstanceID(spec.InstanceID))
	}
	cons, err := kgo.NewClient(copts...)
	if err != nil {
		prod.Close()
		return nil, fmt.Errorf("franz-go consumer: %w", err)
	}
	produce := func(pctx context.Context) (int, error) {
		defer prod.Close()
		var wg sync.WaitGroup
		sent := pace(pctx, spec.Interval, func(seq int) bool {
			wg.Add(1)
			// The records live as long as the instance, not the production:
			// stopping production must not fail records already handed over.
			prod.Produce(ctx, &kgo.Record{Key: []byte(spec.key(seq)), Value: []byte(spec.value(seq))},
				func(r *kgo.Record, err error) {
					defer wg.Done()
					if err != nil {
						l.addError(LiveError{Side: SideProduce, Seq: seq, Msg: err.Error()})
						return
					}
					l.addAck(Ack{Seq: seq, Partition: r.Partition, Offset: r.Offset})
				})
			return true
		})
		wg.Wait()
		return sent, nil
	}
	consume := func(ctx context.Context) error {
		// Close leaves the group, which commits what was consumed.
		defer cons.Close()
		for {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil {
				return nil
			}
			fs.EachError(func(topic string, p int32, err error) {
				l.addError(LiveError{Side: SideConsume, Seq: -1, Msg: fmt.Sprintf("fetch %s/%d: %v", topic, p, err)})
			})
			fs.EachRecord(func(r *kgo.Record) {
				l.addRecord(LiveRecord{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)})
			})
		}
	}
	goLive(ctx, l, produce, consume)
	return l, nil
}

func startSaramaLive(ctx context.Context, spec LiveSpec) (*Live, error) {
	l := newLive(Sarama, spec)
	l.setLibrary("sarama " + modVersion("github.com/IBM/sarama"))
	pcfg := saramaConfig()
	pcfg.ClientID = "clientbed-live-" + spec.Prefix
	// What sarama requires for idempotence; everything else default
	// (Retry.Max 3, Retry.Backoff 100ms).
	pcfg.Producer.Idempotent = true
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	pcfg.Net.MaxOpenRequests = 1
	pcfg.Producer.Return.Successes = true
	if spec.RetryBudget > 0 {
		pcfg.Producer.Retry.Max, pcfg.Producer.Retry.Backoff = SaramaRetries(spec.RetryBudget)
	}
	prod, err := sarama.NewAsyncProducer(spec.Bootstrap, pcfg)
	if err != nil {
		return nil, fmt.Errorf("sarama producer: %w", err)
	}
	ccfg := saramaConfig()
	ccfg.ClientID = "clientbed-live-" + spec.Prefix
	ccfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	ccfg.Consumer.Return.Errors = true // else errors are only logged
	// Defaults: AutoCommit.Enable, every second, and on close.
	group, err := sarama.NewConsumerGroup(spec.Bootstrap, spec.Group, ccfg)
	if err != nil {
		_ = prod.Close()
		return nil, fmt.Errorf("sarama consumer group: %w", err)
	}
	produce := func(ctx context.Context) (int, error) {
		var wg sync.WaitGroup
		wg.Go(func() {
			for m := range prod.Successes() {
				l.addAck(Ack{Seq: m.Metadata.(int), Partition: m.Partition, Offset: m.Offset})
			}
		})
		wg.Go(func() {
			for e := range prod.Errors() {
				seq, _ := e.Msg.Metadata.(int)
				l.addError(LiveError{Side: SideProduce, Seq: seq, Msg: e.Err.Error()})
			}
		})
		sent := pace(ctx, spec.Interval, func(seq int) bool {
			select {
			case prod.Input() <- &sarama.ProducerMessage{Topic: spec.Topic, Key: sarama.StringEncoder(spec.key(seq)),
				Value: sarama.StringEncoder(spec.value(seq)), Metadata: seq}:
				return true
			case <-ctx.Done():
				return false
			}
		})
		// AsyncClose flushes: every message in flight gets its report.
		prod.AsyncClose()
		wg.Wait()
		return sent, nil
	}
	consume := func(ctx context.Context) error {
		var wg sync.WaitGroup
		wg.Go(func() {
			for e := range group.Errors() {
				l.addError(LiveError{Side: SideConsume, Seq: -1, Msg: e.Error()})
			}
		})
		h := &saramaLiveHandler{l: l}
		var err error
		for ctx.Err() == nil {
			// Consume returns at every rebalance; go round until stopped.
			if e := group.Consume(ctx, []string{spec.Topic}, h); e != nil && ctx.Err() == nil {
				l.addError(LiveError{Side: SideConsume, Seq: -1, Msg: fmt.Sprintf("consume: %v", e)})
				if errors.Is(e, sarama.ErrClosedConsumerGroup) {
					break
				}
			}
		}
		// Close commits the marked offsets.
		if e := group.Close(); e != nil {
			err = fmt.Errorf("sarama: close consumer group: %w", e)
		}
		wg.Wait()
		return err
	}
	goLive(ctx, l, produce, consume)
	return l, nil
}

// SaramaRetries returns the sarama producer retry settings
// (Producer.Retry.Max, Producer.Retry.Backoff) whose retries span at least
// budget: retries 250ms apart.
func SaramaRetries(budget time.Duration) (retries int, backoff time.Duration) {
	backoff = 250 * time.Millisecond
	return int((budget + backoff - 1) / backoff), backoff
}

// saramaLiveHandler records every message and marks it, for auto-commit.
type saramaLiveHandler struct{ l *Live }

func (h *saramaLiveHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *saramaLiveHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *saramaLiveHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.l.addRecord(LiveRecord{Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)})
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}
