//go:build unix

package crashtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// keysPerProducer: producer p writes keys p<p>-k0 .. p<p>-k7 in turn.
const keysPerProducer = 8

// acked is a record a producer had acknowledged.
type acked struct {
	key, value string
	seq        int
}

// producer writes keyed records continuously through one sidecar, one at a
// time (so the order per key is the order acknowledged), and keeps what
// was acknowledged. Its value "p<id>-<seq>" names the producer and the
// sequence number.
type producer struct {
	id int
	cl *kgo.Client

	mu      sync.Mutex
	ack     []acked
	tried   int // sequence number of the record being produced
	err     error
	changed chan struct{} // closed and replaced on every acknowledgement
}

func newProducer(id int, cl *kgo.Client) *producer {
	return &producer{id: id, cl: cl, changed: make(chan struct{})}
}

func recordKey(p, seq int) string { return fmt.Sprintf("p%d-k%d", p, seq%keysPerProducer) }

func (p *producer) run(ctx context.Context, topic string) {
	for seq := 0; ctx.Err() == nil; seq++ {
		r := &kgo.Record{Topic: topic, Key: []byte(recordKey(p.id, seq)), Value: fmt.Appendf(nil, "p%d-%d", p.id, seq)}
		p.mu.Lock()
		p.tried = seq
		p.mu.Unlock()
		if err := p.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			if ctx.Err() == nil {
				p.mu.Lock()
				p.err = fmt.Errorf("produce p%d-%d: %w", p.id, seq, err)
				p.mu.Unlock()
			}
			return
		}
		p.mu.Lock()
		p.ack = append(p.ack, acked{string(r.Key), string(r.Value), seq})
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *producer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ack)
}

func (p *producer) state() (acks []acked, tried int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]acked(nil), p.ack...), p.tried, p.err
}

// consumed is a record the consumer group read.
type consumed struct {
	member    int
	partition int32
	offset    int64
	value     string
	at        time.Time // when the member's poll returned it
}

// group is the consumer group's members, read through their sidecars. The
// test can pause them (they stop polling, so the group stops committing).
type group struct {
	mu       sync.Mutex
	received []consumed
	resume   chan struct{} // nil when not paused
	parked   int           // members waiting on resume
}

// parkedMembers returns how many members have stopped polling.
func (g *group) parkedMembers() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.parked
}

func (g *group) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.resume == nil {
		g.resume = make(chan struct{})
	}
}

func (g *group) unpause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.resume != nil {
		close(g.resume)
		g.resume = nil
	}
}

func (g *group) run(ctx context.Context, member int, cl *kgo.Client) {
	for ctx.Err() == nil {
		g.mu.Lock()
		resume := g.resume
		if resume != nil {
			g.parked++
		}
		g.mu.Unlock()
		if resume != nil {
			select {
			case <-resume:
			case <-ctx.Done():
			}
			g.mu.Lock()
			g.parked--
			g.mu.Unlock()
			continue
		}
		fs := cl.PollFetches(ctx)
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			g.mu.Lock()
			g.received = append(g.received, consumed{member, r.Partition, r.Offset, string(r.Value), now})
			g.mu.Unlock()
		})
	}
}

func (g *group) snapshot() []consumed {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]consumed(nil), g.received...)
}

// memLog keeps a client's log lines in memory, for a failure's report.
type memLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *memLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, time.Now().Format("15:04:05.000000 ")+strings.TrimSpace(string(b)))
	return len(b), nil
}

func (l *memLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type rec struct {
	partition int32
	offset    int64
	value     string
}

// readTopic reads every committed record of a topic, ordered by partition
// and offset.
func readTopic(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) []rec {
	t.Helper()
	var out []rec
	for _, r := range c.ReadCommitted(ctx, t, topic) {
		out = append(out, rec{r.Partition, r.Offset, string(r.Value)})
	}
	return out
}
