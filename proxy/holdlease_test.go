package proxy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// TestHoldDeadline: a parked request is held for its budget, or until the
// lease runs out if that is later, and never longer than maxHold — all
// counted from when it was parked.
func TestHoldDeadline(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := time.Second
	tests := []struct {
		name    string
		budget  time.Duration
		lease   time.Time
		maxHold time.Duration
		want    time.Time
	}{
		{"no lease: the budget", 10 * s, time.Time{}, 25 * s, at.Add(10 * s)},
		{"a lease that ended before the budget: the budget", 10 * s, at.Add(3 * s), 25 * s, at.Add(10 * s)},
		{"a lease beyond the budget extends it", 10 * s, at.Add(17 * s), 25 * s, at.Add(17 * s)},
		{"maxHold caps the lease", 10 * s, at.Add(time.Hour), 25 * s, at.Add(25 * s)},
		{"maxHold caps the budget", 40 * s, time.Time{}, 25 * s, at.Add(25 * s)},
		{"a lease from before the request was parked", 10 * s, at.Add(-s), 25 * s, at.Add(10 * s)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := holdDeadline(at, tt.budget, tt.lease, tt.maxHold); !got.Equal(tt.want) {
				t.Errorf("holdDeadline = %v after parking, want %v", got.Sub(at), tt.want.Sub(at))
			}
		})
	}
}

// TestGateModesPerKey: a gate's keys have a mode each — those of RejectKeys
// are refused whatever Mode says — and Canonical gives one form per
// meaning: what the proxy keeps, reports and compares.
func TestGateModesPerKey(t *testing.T) {
	flip := Gate{APIKeys: []int16{keyProduce}, Mode: GateHold, RejectKeys: []int16{keyFetch}, HoldBudget: time.Second}
	for _, tt := range []struct {
		key  int16
		mode GateMode
		ok   bool
	}{{keyProduce, GateHold, true}, {keyFetch, GateReject, true}, {keyOffsetCommit, 0, false}} {
		if m, ok := flip.ModeFor(tt.key); m != tt.mode || ok != tt.ok || flip.Blocks(tt.key) != tt.ok {
			t.Errorf("flip gate, key %d: ModeFor = %v %v, want %v %v", tt.key, m, ok, tt.mode, tt.ok)
		}
	}
	if m, _ := (Gate{APIKeys: []int16{keyFetch}, Mode: GateHold, RejectKeys: []int16{keyFetch}}).ModeFor(keyFetch); m != GateReject {
		t.Errorf("a key in both lists: %v, want REJECT", m)
	}
	canon := []struct {
		name    string
		in, out Gate
	}{
		{"none", Gate{Mode: GateHold, HoldBudget: time.Second}, Gate{}},
		{"sorted, once each", Gate{APIKeys: []int16{8, 0, 8}, Mode: GateHold}, Gate{APIKeys: []int16{0, 8}, Mode: GateHold}},
		{"reject keys beside HOLD keys", flip, flip},
		{"a key in both lists is a reject key", Gate{APIKeys: []int16{0, 1}, Mode: GateHold, RejectKeys: []int16{1, 1}},
			Gate{APIKeys: []int16{0}, Mode: GateHold, RejectKeys: []int16{1}}},
		{"every key refused: a REJECT gate", Gate{APIKeys: []int16{1}, Mode: GateHold, RejectKeys: []int16{1, 0}},
			Gate{APIKeys: []int16{0, 1}, Mode: GateReject}},
		{"reject keys alone, no mode", Gate{RejectKeys: []int16{1}}, Gate{APIKeys: []int16{1}, Mode: GateReject}},
		{"reject keys of a REJECT gate", Gate{APIKeys: []int16{8}, Mode: GateReject, RejectKeys: []int16{1}},
			Gate{APIKeys: []int16{1, 8}, Mode: GateReject}},
	}
	for _, tt := range canon {
		got := tt.in.Canonical()
		if got.Mode != tt.out.Mode || !slices.Equal(got.APIKeys, tt.out.APIKeys) || !slices.Equal(got.RejectKeys, tt.out.RejectKeys) ||
			got.HoldBudget != tt.out.HoldBudget || !got.Equal(tt.in) {
			t.Errorf("%s: Canonical = %+v, want %+v", tt.name, got, tt.out)
		}
	}
	if flip.Equal(Gate{APIKeys: []int16{keyProduce, keyFetch}, Mode: GateHold, HoldBudget: time.Second}) {
		t.Error("holding Fetch equals refusing it")
	}
	for _, tt := range []struct {
		name string
		g    Gate
		want string
	}{
		{"a reject key that cannot be answered", Gate{APIKeys: []int16{0}, Mode: GateHold, RejectKeys: []int16{18}}, "API key 18"},
		{"a negative reject key", Gate{RejectKeys: []int16{-1}}, "API key -1"},
		{"no mode for API keys", Gate{APIKeys: []int16{0}, RejectKeys: []int16{1}}, "mode"},
	} {
		if err := tt.g.validate(); !errors.Is(err, ErrInvalidGate) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: validate = %v, want ErrInvalidGate naming %q", tt.name, err, tt.want)
		}
	}
	if err := (Gate{RejectKeys: []int16{1}}).validate(); err != nil {
		t.Errorf("reject keys alone: %v", err)
	}
}

// TestHeldProduceSurvivesFetchRejectGate: a Produce parked by a HOLD gate
// stays parked when the gate is replaced by a cutover's flip gate, which
// holds Produce and refuses Fetch; Fetch is refused (answered empty), and
// the Produce is forwarded once a gate without it replaces that one —
// never answered NOT_ENOUGH_REPLICAS (a retries=0 client would fail its
// send).
func TestHeldProduceSurvivesFetchRejectGate(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdflip")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget, c.MaxHold = 20*time.Second, 20*time.Second })
	outcome := func(api, o string) float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", api, "outcome", o)
	}
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	leader := leaderAddr(t, tp, topic)
	pc := dialWire(t, leader, "producer")
	req := rawProduce(7, -1, topic, [16]byte{}, "held")
	corr := pc.send(req)
	eventually(t, 10*time.Second, "the produce held", func() error {
		if tp.Status().Held != 1 {
			return errNotYet
		}
		return nil
	})

	flip := Gate{APIKeys: []int16{keyProduce}, Mode: GateHold, RejectKeys: []int16{keyFetch}}
	if err := tp.SetGate(flip); err != nil {
		t.Fatal(err)
	}
	if st := tp.Status(); !slices.Equal(st.Gate.APIKeys, []int16{keyProduce}) || st.Gate.Mode != GateHold ||
		!slices.Equal(st.Gate.RejectKeys, []int16{keyFetch}) {
		t.Errorf("status gate %+v, want Produce held and Fetch refused", st.Gate)
	}
	fetch := fetchZero(topic, 50)
	checkEmptyFetch(t, fetch, dialWire(t, leader, "consumer").roundTrip(fetch).(*kmsg.FetchResponse))
	if got := outcome("Fetch", "reject"); got != 1 {
		t.Errorf("fetches refused: %v, want 1", got)
	}
	if st := tp.Status(); st.Held != 1 {
		t.Fatalf("%d requests held after the flip gate, want the produce still held", st.Held)
	}

	// The release: Fetch still refused, Produce no longer gated.
	if err := tp.SetGate(Gate{APIKeys: []int16{keyFetch}, Mode: GateReject}); err != nil {
		t.Fatal(err)
	}
	resp := pc.recv(req, corr).(*kmsg.ProduceResponse)
	if c := resp.Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Errorf("held produce answered with error %d (%v), want forwarded and written", c, kerr.ErrorForCode(c))
	}
	for _, o := range []string{"reject", "hold_expired", "hold_limit"} {
		if got := outcome("Produce", o); got != 0 {
			t.Errorf("produce outcome %s: %v, want 0", o, got)
		}
	}
}

// TestHoldLeaseAndMaxHold: how long a parked Produce is held, against the
// wall clock: a gate's budget without a lease; past it while a lease is
// renewed, and a budget-less lease's end once renewals stop; never past
// maxHold from when it was parked; and with the budget of the gate in
// force, counted from when it was parked — a gate change moves the
// deadline either way.
func TestHoldLeaseAndMaxHold(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdlease")
	source.CreateTopic(t, topic, 1)
	const maxHold = 3 * time.Second
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget, c.MaxHold = maxHold, maxHold })
	leader := leaderAddr(t, tp, topic)
	expired := func(t *testing.T) float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", "hold_expired")
	}
	gate := func(t *testing.T, budget time.Duration) {
		t.Helper()
		if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold, HoldBudget: budget}); err != nil {
			t.Fatal(err)
		}
	}
	// park sends a produce on a new connection and waits until it is held;
	// answer returns its error code and how long after sending it came.
	park := func(t *testing.T, name string) (answer func() (int16, time.Duration)) {
		t.Helper()
		c := dialWire(t, leader, name)
		req := rawProduce(7, -1, topic, [16]byte{}, name)
		sent := time.Now()
		corr := c.send(req)
		eventually(t, 10*time.Second, name+": held", func() error {
			if tp.Status().Held != 1 {
				return errNotYet
			}
			return nil
		})
		return func() (int16, time.Duration) {
			resp := c.recv(req, corr).(*kmsg.ProduceResponse)
			return resp.Topics[0].Partitions[0].ErrorCode, time.Since(sent)
		}
	}
	// stillHeld checks, d after parking, that the request is held still.
	stillHeld := func(t *testing.T, name string, d time.Duration, before float64) {
		t.Helper()
		time.Sleep(d) // the behaviour under test is how long time may pass
		if held, exp := tp.Status().Held, expired(t); held != 1 || exp != before {
			t.Fatalf("%s: after %v, %d held and %v expired, want the request held", name, d, held, exp-before)
		}
	}
	const budget = 400 * time.Millisecond

	t.Run("no lease: the budget", func(t *testing.T) {
		gate(t, budget)
		defer tp.ClearGate()
		before := expired(t)
		code, took := park(t, "nolease")()
		if code != kerr.NotEnoughReplicas.Code || took < budget || took >= maxHold {
			t.Errorf("answered %d after %v, want NOT_ENOUGH_REPLICAS after the %v budget", code, took, budget)
		}
		if got := expired(t) - before; got != 1 {
			t.Errorf("hold_expired grew by %v, want 1", got)
		}
	})

	t.Run("a renewed lease holds past the budget, until the gate lifts", func(t *testing.T) {
		gate(t, budget)
		defer tp.ClearGate()
		stop := make(chan struct{})
		renewed := make(chan struct{})
		stopRenewing := sync.OnceFunc(func() { close(stop); <-renewed })
		defer stopRenewing()
		go func() { // the control plane, renewing every budget/4
			defer close(renewed)
			tick := time.NewTicker(budget / 4)
			defer tick.Stop()
			for {
				tp.ExtendHold(time.Now().Add(budget))
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		before := expired(t)
		answer := park(t, "renewed")
		stillHeld(t, "renewed", 3*budget, before)
		stopRenewing()
		tp.ClearGate()
		if code, took := answer(); code != 0 {
			t.Errorf("answered %d after %v, want forwarded when the gate lifted", code, took)
		}
	})

	t.Run("renewals stop: expiry when the lease ends", func(t *testing.T) {
		gate(t, budget)
		defer tp.ClearGate()
		lease := 4 * budget
		tp.ExtendHold(time.Now().Add(lease))
		code, took := park(t, "lastlease")()
		if code != kerr.NotEnoughReplicas.Code || took < lease-50*time.Millisecond || took >= maxHold {
			t.Errorf("answered %d after %v, want NOT_ENOUGH_REPLICAS when the %v lease ended", code, took, lease)
		}
	})

	t.Run("maxHold caps a lease", func(t *testing.T) {
		gate(t, budget)
		defer tp.ClearGate()
		tp.ExtendHold(time.Now().Add(time.Hour))
		code, took := park(t, "capped")()
		if code != kerr.NotEnoughReplicas.Code || took < maxHold || took > maxHold+2*time.Second {
			t.Errorf("answered %d after %v, want NOT_ENOUGH_REPLICAS at maxHold %v", code, took, maxHold)
		}
	})

	t.Run("ClearGate ends the lease", func(t *testing.T) {
		tp.ExtendHold(time.Now().Add(time.Hour))
		tp.ClearGate()
		gate(t, budget)
		defer tp.ClearGate()
		if code, took := park(t, "cleared")(); code != kerr.NotEnoughReplicas.Code || took >= 4*budget {
			t.Errorf("answered %d after %v, want NOT_ENOUGH_REPLICAS after the %v budget", code, took, budget)
		}
	})

	t.Run("a shorter budget takes effect on a held request", func(t *testing.T) {
		gate(t, 2*time.Second)
		defer tp.ClearGate()
		answer := park(t, "shortened")
		gate(t, budget)
		if code, took := answer(); code != kerr.NotEnoughReplicas.Code || took >= 2*time.Second-100*time.Millisecond {
			t.Errorf("answered %d after %v, want NOT_ENOUGH_REPLICAS soon after the budget became %v", code, took, budget)
		}
	})

	t.Run("a longer budget takes effect on a held request", func(t *testing.T) {
		gate(t, budget)
		defer tp.ClearGate()
		before := expired(t)
		answer := park(t, "lengthened")
		gate(t, maxHold)
		stillHeld(t, "lengthened", 2*budget, before)
		tp.ClearGate()
		if code, took := answer(); code != 0 {
			t.Errorf("answered %d after %v, want forwarded when the gate lifted", code, took)
		}
	})
}

// TestFetchWaitsForTransactions: a gate that refuses Fetch with
// FetchWaitsForTransactions lets Fetch through while a transaction is open
// through the proxy, and refuses it again once none is.
func TestFetchWaitsForTransactions(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 1) // one broker: leader and coordinator
	topic := kafkatest.Topic(t, "fetchtxn")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil)
	leader := tp.Addr().String()
	if err := tp.SetGate(Gate{APIKeys: []int16{keyFetch}, Mode: GateReject, FetchWaitsForTransactions: true}); err != nil {
		t.Fatal(err)
	}
	refused := func() float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Fetch", "outcome", "reject")
	}
	fc := dialWire(t, leader, "reader")
	fetch := func(name string, wantRefused bool) {
		t.Helper()
		before := refused()
		resp := fc.roundTrip(fetchZero(topic, 10)).(*kmsg.FetchResponse)
		if got := refused() - before; (got == 1) != wantRefused || got > 1 {
			t.Errorf("%s: refused %v times, want refused %v", name, got, wantRefused)
		}
		if !wantRefused && (len(resp.Topics) != 1 || resp.Topics[0].Partitions[0].LogStartOffset < 0) {
			t.Errorf("%s: answer %+v, want the broker's", name, resp.Topics)
		}
	}
	fetch("no transaction open", true)

	tc := dialWire(t, leader, "txn")
	txnID := kafkatest.Topic(t, "tx")
	init := initTxnOnWire(t, tc, txnID, 60000)
	add := kmsg.NewPtrAddPartitionsToTxnRequest()
	add.Version, add.TransactionalID, add.ProducerID, add.ProducerEpoch = 3, txnID, init.ProducerID, init.ProducerEpoch
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = topic, []int32{0}
	add.Topics = append(add.Topics, at)
	if r := tc.roundTrip(add).(*kmsg.AddPartitionsToTxnResponse); r.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("add partitions to txn: error %d", r.Topics[0].Partitions[0].ErrorCode)
	}
	eventually(t, 10*time.Second, "the transaction open", func() error {
		if n := tp.Status().InFlightByAPI[keyEndTxn]; n != 1 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	fetch("a transaction open", false)

	end := kmsg.NewPtrEndTxnRequest()
	end.Version, end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = 3, txnID, init.ProducerID, init.ProducerEpoch, false
	if r := tc.roundTrip(end).(*kmsg.EndTxnResponse); r.ErrorCode != 0 {
		t.Fatalf("end txn: error %d", r.ErrorCode)
	}
	eventually(t, 10*time.Second, "the transaction ended", func() error {
		if n := tp.Status().InFlightByAPI[keyEndTxn]; n != 0 {
			return fmt.Errorf("%d open", n)
		}
		return nil
	})
	fetch("the transaction ended", true)
}

// fetchZero is a Fetch v11 of partition 0 of topic from offset 0.
func fetchZero(topic string, maxWaitMillis int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.ReplicaID, req.MaxWaitMillis, req.MaxBytes, req.SessionEpoch = 11, -1, maxWaitMillis, 1<<20, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = 0, 1<<20, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}
