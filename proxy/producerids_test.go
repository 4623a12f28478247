package proxy

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeClock is a clock that moves only when told: timers fire, in the
// caller's goroutine, when Advance passes their time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !t.done
		t.done = true
		return stopped
	}
}

// Advance moves the clock on by d and runs the timers due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.done:
		case !t.at.After(c.now):
			t.done = true
			due = append(due, t.f)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// offlineProducer drives one short-lived idempotent producer through an
// offline proxy's request and response paths, as a connection does: the
// InitProducerId answer, then one Produce of one record to topic-0/0 and
// its answer.
type offlineProducer struct {
	t *testing.T
	p *Proxy
	u *upstream
}

// init runs the cluster's InitProducerId answer (id realID) through the
// proxy and returns the id presented to the client.
func (o offlineProducer) init(realID int64) int64 {
	o.t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.Version = 4
	hdr, err := parseRequestHeader(requestFrameFor(req, 1))
	if err != nil {
		o.t.Fatal(err)
	}
	resp := kmsg.NewPtrInitProducerIDResponse()
	resp.Version, resp.ProducerID, resp.ProducerEpoch = 4, realID, 0
	out, err := o.p.rewriteResponse(deadCtx(), o.u, &pendingReq{hdr: hdr, prevProducerID: -1},
		responseFrame(keyInitProducerID, 4, 1, resp.AppendTo(nil)))
	if err != nil {
		o.t.Fatalf("InitProducerId response: %v", err)
	}
	body, err := stripResponseHeader(keyInitProducerID, 4, out)
	if err != nil {
		o.t.Fatal(err)
	}
	got := kmsg.NewPtrInitProducerIDResponse()
	got.Version = 4
	if err := got.ReadFrom(body); err != nil {
		o.t.Fatal(err)
	}
	return got.ProducerID
}

// produce sends one batch of the presented producer id at sequence seq
// and answers it as written.
func (o offlineProducer) produce(pid int64, seq int32) {
	o.t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "topic-0"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = idempotentBatch(pid, 0, seq, int(seq), 1)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	frame := requestFrameFor(req, 2)
	hdr, err := parseRequestHeader(frame)
	if err != nil {
		o.t.Fatal(err)
	}
	rw, err := o.p.rewriteRequest(deadCtx(), &clientConn{p: o.p}, o.u, hdr, frame)
	if err != nil || rw.local != nil {
		o.t.Fatalf("produce: %v (answered locally: %v)", err, rw.local != nil)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 9
	st := kmsg.NewProduceResponseTopic()
	st.Topic = "topic-0"
	st.Partitions = append(st.Partitions, kmsg.NewProduceResponseTopicPartition())
	resp.Topics = append(resp.Topics, st)
	if _, err := o.p.rewriteResponse(deadCtx(), o.u, &pendingReq{hdr: hdr, prevProducerID: -1, seqs: rw.seqs},
		responseFrame(keyProduce, 9, 2, resp.AppendTo(nil))); err != nil {
		o.t.Fatalf("produce response: %v", err)
	}
	o.p.releaseSeqs(rw.seqs)
}

// limitProducerTable sets the producer table's limits and clock.
func limitProducerTable(p *Proxy, expiry time.Duration, maxIDs int, c clock) {
	p.pids.setClock(c)
	p.pids.mu.Lock()
	p.pids.expiry, p.pids.max = expiry, maxIDs
	p.pids.mu.Unlock()
}

// TestProducerTableBoundedUnderChurn: 20,000 short-lived idempotent
// producers (one InitProducerId and one Produce each, 10 ms apart) pass
// through one proxy. With producers forgotten after a minute unused, the
// table never holds more than a minute's worth of them, and the metrics
// show its size and what it forgot. (make soak-producers runs a million
// through the proxy binary and measures its RSS.)
func TestProducerTableBoundedUnderChurn(t *testing.T) {
	p, u := newOfflineProxy(t)
	c := newFakeClock()
	const (
		producers = 20000
		every     = 10 * time.Millisecond
		expiry    = time.Minute
		bound     = int(expiry/every) + 1
	)
	limitProducerTable(p, expiry, 1<<30, c)
	o := offlineProducer{t: t, p: p, u: u}
	largest := 0
	for i := range producers {
		o.produce(o.init(int64(i)), 0)
		largest = max(largest, p.pids.size())
		c.Advance(every)
	}
	n := p.pids.size()
	if largest > bound {
		t.Errorf("producer table held %d producers at its largest, want at most %d (a minute's worth)", largest, bound)
	}
	if got := testutil.ToFloat64(p.m.producerIDs); int(got) != n {
		t.Errorf("producer_ids gauge %v, table holds %d", got, n)
	}
	if got := testutil.ToFloat64(p.m.producerIDsExpired.WithLabelValues("idle")); int(got) != producers-n {
		t.Errorf("producer_ids_expired_total{reason=idle} %v, want %d", got, producers-n)
	}
	t.Logf("%d producers: table at most %d, %d at the end", producers, largest, n)
}

// TestProducerTableForgetsLeastRecentlyUsed: beyond MaxProducerIDs the
// producer unused longest is forgotten, not one that keeps producing; an
// idle producer is forgotten after the expiry, a producing one is not.
func TestProducerTableForgetsLeastRecentlyUsed(t *testing.T) {
	p, u := newOfflineProxy(t)
	c := newFakeClock()
	limitProducerTable(p, time.Hour, 100, c)
	o := offlineProducer{t: t, p: p, u: u}
	live := o.init(1_000_000)
	seq := int32(0)
	for i := range 1000 {
		if i%50 == 0 {
			o.produce(live, seq)
			seq++
		}
		o.produce(o.init(int64(i)), 0)
	}
	if n := p.pids.size(); n != 100 {
		t.Fatalf("table holds %d producers, want the limit, 100", n)
	}
	if _, ok := p.pids.lookup(live); !ok {
		t.Fatal("a producer that kept producing was forgotten for the limit")
	}
	if got := testutil.ToFloat64(p.m.producerIDsExpired.WithLabelValues("limit")); got != 901 {
		t.Errorf("producer_ids_expired_total{reason=limit} %v, want 901", got)
	}
	// An hour on, only the producer still producing is left once the next
	// one arrives.
	for range 6 {
		c.Advance(10 * time.Minute)
		o.produce(live, seq)
		seq++
	}
	c.Advance(time.Minute)
	last := o.init(5_000_000)
	for _, id := range []int64{live, last} {
		if _, ok := p.pids.lookup(id); !ok {
			t.Errorf("producer %d, used within the expiry, was forgotten", id)
		}
	}
	if n := p.pids.size(); n != 2 {
		t.Errorf("table holds %d producers an hour on, want 2", n)
	}
}

// BenchmarkInitProducerIDTable: the cost of one more producer does not
// grow with the table (it used to scan the table on every InitProducerId).
func BenchmarkInitProducerIDTable(b *testing.B) {
	for _, size := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("table=%d", size), func(b *testing.B) {
			ids := newProducerIDs(DefaultConfig(), nil)
			ids.max = size
			u := &upstream{name: "source"}
			for i := range size {
				ids.issued(u, -1, int64(i), 0)
			}
			b.ResetTimer()
			for i := range b.N {
				ids.issued(u, -1, int64(size+i), 0)
			}
		})
	}
}

// TestAckedSeqs: a producer's acknowledged sequences read back what was
// set, per partition, before and after the list gives way to a map.
func TestAckedSeqs(t *testing.T) {
	var a ackedSeqs
	want := map[topicPartition]ackedSeq{}
	for i := range 3 * ackedFew {
		tp := topicPartition{fmt.Sprint("t", i%5), int32(i)}
		s := ackedSeq{epoch: int16(i % 3), next: int32(i * 7)}
		a.set(tp, s)
		want[tp] = s
		if i%4 == 0 { // overwrite an earlier one
			old := topicPartition{"t0", 0}
			a.set(old, ackedSeq{next: int32(i)})
			want[old] = ackedSeq{next: int32(i)}
		}
		for tp, w := range want {
			if got, ok := a.get(tp); !ok || got != w {
				t.Fatalf("after %d sets: %v reads %v (%v), want %v", i+1, tp, got, ok, w)
			}
		}
		if _, ok := a.get(topicPartition{"none", 0}); ok {
			t.Fatal("a partition never set reads as acknowledged")
		}
	}
}
