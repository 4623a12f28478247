package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// producer hands keyed records to one franz-go client at a fixed rate,
// whether or not earlier ones were acknowledged (open loop), and records
// when each was handed over and when it was acknowledged.
type producer struct {
	id    int
	cl    *kgo.Client
	topic string
	rate  float64
	pad   string

	mu       sync.Mutex
	sent     []time.Time // by sequence number
	acked    []time.Time // by sequence number; zero until acknowledged
	failed   []bool      // by sequence number: the client gave up on it
	nFailed  int
	firstErr error
}

const keysPerProducer = 8

func newProducer(id int, addr, topic string, rate float64, valueBytes int) (*producer, error) {
	// franz-go's defaults: idempotent, acks=all, 10 ms linger.
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	return &producer{id: id, cl: cl, topic: topic, rate: rate, pad: strings.Repeat("x", valueBytes)}, nil
}

func recordKey(id, seq int) string { return fmt.Sprintf("p%d-k%d", id, seq%keysPerProducer) }

// recordValue is "p<id>-<seq>|" padded to the value size.
func (p *producer) recordValue(seq int) []byte {
	v := fmt.Sprintf("p%d-%d|", p.id, seq)
	if len(v) < len(p.pad) {
		v += p.pad[len(v):]
	}
	return []byte(v)
}

// run produces until ctx ends. Records due in the same 5 ms tick are
// handed over together.
func (p *producer) run(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / p.rate)
	tick := max(interval, 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	for seq := 0; ; {
		for due := start.Add(time.Duration(seq) * interval); !due.After(time.Now()); due = start.Add(time.Duration(seq) * interval) {
			p.produce(seq)
			seq++
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *producer) produce(seq int) {
	r := &kgo.Record{Topic: p.topic, Key: []byte(recordKey(p.id, seq)), Value: p.recordValue(seq)}
	p.mu.Lock()
	p.sent = append(p.sent, time.Now())
	p.acked = append(p.acked, time.Time{})
	p.failed = append(p.failed, false)
	p.mu.Unlock()
	// Not the run's context: records handed over stay with the client
	// until acknowledged or failed, and flush waits for them.
	p.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
		now := time.Now()
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.failed[seq] = true
			p.nFailed++
			if p.firstErr == nil {
				p.firstErr = fmt.Errorf("record p%d-%d: %w", p.id, seq, err)
			}
			return
		}
		p.acked[seq] = now
	})
}

// ackedCount is the number of records acknowledged so far.
func (p *producer) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, a := range p.acked {
		if !a.IsZero() {
			n++
		}
	}
	return n
}

// snapshot returns copies of what was recorded (after flush, final).
func (p *producer) snapshot() (sent, acked []time.Time, failed []bool, nFailed int, firstErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.sent...), append([]time.Time(nil), p.acked...),
		append([]bool(nil), p.failed...), p.nFailed, p.firstErr
}
