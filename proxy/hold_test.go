package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/stubmirror"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestHoldCutoverKeepsOrder runs a producer (idempotent, several requests
// in flight) and a consumer through the proxy across a HOLD-mode cutover
// of Produce and Fetch: gate, drain, copy, switch, lift. Both see latency,
// not errors: every record is acknowledged once, the target holds the
// records in production order exactly once, and the consumer reads them
// all, in order, none twice — its held fetches released onto the target.
func TestHoldCutoverKeepsOrder(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdcut")
	source.CreateTopic(t, topic, 1)
	target.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, target, func(c *Config) { c.HoldBudget, c.MaxHold = 30*time.Second, 30*time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	producer := tp.client(t, kgo.ProducerLinger(0))
	consumer := tp.client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(100*time.Millisecond))

	// The producer: values v-0, v-1, ... in order, at most 64 unacknowledged.
	var (
		pmu     sync.Mutex
		acked   []int
		prodErr error
	)
	window := make(chan struct{}, 64)
	stop := make(chan struct{})
	produced := make(chan int, 1)
	go func() {
		i := 0
		defer func() { produced <- i }()
		for {
			select {
			case <-stop:
				return
			case window <- struct{}{}:
			}
			seq := i
			producer.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte("v-" + strconv.Itoa(seq))}, func(_ *kgo.Record, err error) {
				pmu.Lock()
				if err != nil && prodErr == nil {
					prodErr = fmt.Errorf("record v-%d: %w", seq, err)
				}
				if err == nil {
					acked = append(acked, seq)
				}
				pmu.Unlock()
				<-window
			})
			i++
		}
	}()
	ackedN := func() int {
		pmu.Lock()
		defer pmu.Unlock()
		if prodErr != nil {
			t.Fatalf("producer: %v", prodErr)
		}
		return len(acked)
	}

	// The consumer.
	var (
		cmu      sync.Mutex
		consumed []string
	)
	cctx, stopConsumer := context.WithCancel(ctx)
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		for cctx.Err() == nil {
			fs := consumer.PollFetches(cctx)
			cmu.Lock()
			fs.EachRecord(func(r *kgo.Record) { consumed = append(consumed, string(r.Value)) })
			cmu.Unlock()
		}
	}()
	consumedN := func() int {
		cmu.Lock()
		defer cmu.Unlock()
		return len(consumed)
	}

	eventually(t, 30*time.Second, "records before the cutover", func() error {
		if a, c := ackedN(), consumedN(); a < 500 || c < 100 {
			return fmt.Errorf("%d acked, %d consumed", a, c)
		}
		return nil
	})
	held := func(api string) float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", api, "outcome", "hold")
	}
	heldProduce, heldFetch := held("Produce"), held("Fetch")
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce, keyFetch}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "produce drained, produce and fetch held", func() error {
		st := tp.Status()
		if n := st.InFlightByAPI[keyProduce]; n != 0 {
			return fmt.Errorf("%d produce requests in flight", n)
		}
		if held("Produce") == heldProduce || held("Fetch") == heldFetch {
			return fmt.Errorf("produce held %v, fetch held %v", held("Produce")-heldProduce, held("Fetch")-heldFetch)
		}
		return nil
	})
	copied, err := stubmirror.CopyTopic(ctx, source.Bootstrap, target.Bootstrap, topic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	tp.ClearGate()
	eventually(t, 30*time.Second, "records after the cutover", func() error {
		if a := ackedN(); a < copied+500 {
			return fmt.Errorf("%d acked", a)
		}
		return nil
	})
	close(stop)
	total := <-produced
	eventually(t, 30*time.Second, "every record acknowledged", func() error {
		if a := ackedN(); a != total {
			return fmt.Errorf("%d of %d acked", a, total)
		}
		return nil
	})
	want := taggedValues("v", 0, total)
	if got := readPartitionZero(ctx, t, target, topic, total); !slices.Equal(got, want) {
		t.Errorf("target holds %v..., want v-0..v-%d once each in order", firstFew(got), total-1)
	}
	eventually(t, 30*time.Second, "the consumer read everything", func() error {
		if c := consumedN(); c < total {
			return fmt.Errorf("%d of %d", c, total)
		}
		return nil
	})
	stopConsumer()
	<-consDone
	cmu.Lock()
	got := slices.Clone(consumed)
	cmu.Unlock()
	if !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Errorf("consumer read %d records, want v-0..v-%d once each in order; first difference at #%d: %v",
			len(got), total-1, i, got[i:min(len(got), i+5)])
	}
	if exp := gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "outcome", "hold_expired"); exp != 0 {
		t.Errorf("%v holds expired under a 30 s budget", exp)
	}
	t.Logf("%d records, %d copied before the switch", total, copied)
}

// TestHoldExpiryKeepsConnectionOrder: once a held request of a connection
// was answered with the retriable error, the requests that follow it on
// that connection are answered the same way at once, not held — a later
// batch must not reach a cluster before an earlier one the client will
// retry — until one is admitted; then holding resumes.
func TestHoldExpiryKeepsConnectionOrder(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdorder")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget = 200 * time.Millisecond })
	outcome := func(o string) float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", o)
	}
	code := func(r kmsg.Response) int16 {
		pr := r.(*kmsg.ProduceResponse)
		if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 {
			t.Fatalf("produce response %+v", pr.Topics)
		}
		return pr.Topics[0].Partitions[0].ErrorCode
	}
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	rc := dialWire(t, leaderAddr(t, tp, topic), "order")
	if c := code(rc.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "a"))); c != kerr.NotEnoughReplicas.Code {
		t.Fatalf("first request: error %d, want NOT_ENOUGH_REPLICAS after the hold budget", c)
	}
	// A request of another key in between is served as usual...
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	if resp := rc.roundTrip(md).(*kmsg.MetadataResponse); len(resp.Brokers) == 0 {
		t.Fatalf("metadata: no brokers")
	}
	// ...and the next produce is answered at once: never counted as held.
	if c := code(rc.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "b"))); c != kerr.NotEnoughReplicas.Code {
		t.Fatalf("second request: error %d, want NOT_ENOUGH_REPLICAS", c)
	}
	if h, e := outcome("hold"), outcome("hold_expired"); h != 1 || e != 2 {
		t.Errorf("held %v, expired %v; want 1 and 2", h, e)
	}
	tp.ClearGate()
	if c := code(rc.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "c"))); c != 0 {
		t.Fatalf("with the gate lifted: error %d", c)
	}
	// Admitted once: the connection's next gated request is held again.
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	corr := rc.send(rawProduce(7, -1, topic, [16]byte{}, "d"))
	eventually(t, 10*time.Second, "the next request held", func() error {
		if outcome("hold") != 2 {
			return errNotYet
		}
		return nil
	})
	tp.ClearGate()
	// Forwarded, or expired if the gate outlived the short budget.
	if c := code(rc.recv(rawProduce(7, -1, topic, [16]byte{}, "d"), corr)); c != 0 && c != kerr.NotEnoughReplicas.Code {
		t.Fatalf("held request: error %d", c)
	}
}

// leaderAddr returns the proxy's address for the leader of partition 0 of
// topic, where raw produce requests must go.
func leaderAddr(t *testing.T, tp *testProxy, topic string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := kadm.NewClient(tp.client(t)).Metadata(ctx, topic)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	leader := md.Topics[topic].Partitions[0].Leader
	for _, b := range md.Brokers {
		if b.NodeID == leader {
			return net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	t.Fatalf("leader %d of %s/0 not among the brokers %v", leader, topic, md.Brokers)
	return ""
}

// TestHoldByteLimit: HOLD gates park at most MaxHeldBytes over all
// connections; a request beyond it is answered at once as a REJECT gate
// would (outcome hold_limit), and the held one is forwarded when the gate
// lifts. The held_bytes gauge follows.
func TestHoldByteLimit(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdlimit")
	source.CreateTopic(t, topic, 1)
	req := rawProduce(7, -1, topic, [16]byte{}, "x")
	frame := int64(len(kmsg.NewRequestFormatter(kmsg.FormatterClientID("limit")).AppendRequest(nil, req, 1)))
	tp := startProxy(t, source, nil, func(c *Config) {
		c.HoldBudget, c.MaxHold = time.Minute, time.Minute
		c.MaxHeldBytes = frame + frame/2
	})
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	leader := leaderAddr(t, tp, topic)
	a := dialWire(t, leader, "limit")
	corr := a.send(req)
	eventually(t, 10*time.Second, "one request held", func() error {
		if tp.Status().Held != 1 {
			return errNotYet
		}
		return nil
	})
	if got := gatheredValue(t, tp.reg, "switchyard_proxy_held_bytes"); got != float64(frame) {
		t.Errorf("held_bytes %v, want %d", got, frame)
	}
	b := dialWire(t, leader, "limit")
	resp := b.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "y")).(*kmsg.ProduceResponse)
	if c := resp.Topics[0].Partitions[0].ErrorCode; c != kerr.NotEnoughReplicas.Code {
		t.Errorf("request beyond the limit: error %d, want NOT_ENOUGH_REPLICAS", c)
	}
	if got := gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "outcome", "hold_limit"); got != 1 {
		t.Errorf("hold_limit %v, want 1", got)
	}
	tp.ClearGate()
	held := a.recv(req, corr).(*kmsg.ProduceResponse)
	if c := held.Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Errorf("held request after the gate lifted: error %d", c)
	}
	if got := gatheredValue(t, tp.reg, "switchyard_proxy_held_bytes"); got != 0 {
		t.Errorf("held_bytes %v after the gate lifted", got)
	}
	if got := readPartitionZero(context.Background(), t, source, topic, 1); !slices.Equal(got, []string{"x"}) {
		t.Errorf("partition holds %v, want [x]", got)
	}
}

func TestConfigMaxHeldBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    int64
		ok   bool
	}{{"default", DefaultConfig().MaxHeldBytes, true}, {"zero", 0, false}, {"negative", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Clusters = []ClusterConfig{{Name: "a", Bootstrap: []string{"127.0.0.1:9092"}}}
			c.MaxHeldBytes = tc.v
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate with maxHeldBytes %d: %v", tc.v, err)
			}
		})
	}
}

// TestGateHoldBudget: a HOLD gate's own budget (a cutover's
// policy.hold_budget, passed to the sidecars) replaces the proxy's
// holdBudget: with a minute configured, a gate of 200 ms answers a held
// produce with the retriable error well within the test's read deadline.
func TestGateHoldBudget(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "gatebudget")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget, c.MaxHold = time.Minute, time.Minute })
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold, HoldBudget: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if st := tp.Status(); st.Gate.HoldBudget != 200*time.Millisecond {
		t.Fatalf("status gate hold budget %v, want 200ms", st.Gate.HoldBudget)
	}
	rc := dialWire(t, leaderAddr(t, tp, topic), "budget")
	pr := rc.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "a")).(*kmsg.ProduceResponse)
	if c := pr.Topics[0].Partitions[0].ErrorCode; c != kerr.NotEnoughReplicas.Code {
		t.Fatalf("held produce: error %d, want NOT_ENOUGH_REPLICAS after the gate's budget", c)
	}
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold, HoldBudget: -time.Second}); !errors.Is(err, ErrInvalidGate) {
		t.Fatalf("negative hold budget: %v, want ErrInvalidGate", err)
	}
}
