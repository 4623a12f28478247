package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// TestMaxConnections: connections beyond maxConnections are closed on
// accept and counted; once one closes, a new one is served.
func TestMaxConnections(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	tp := startProxy(t, source, nil, func(c *Config) { c.MaxConnections = 3 })
	var open []*wireConn
	for i := range 3 {
		c := dialWire(t, tp.Addr().String(), fmt.Sprintf("c%d", i))
		c.roundTrip(kmsg.NewPtrApiVersionsRequest()) // served, so registered
		open = append(open, c)
	}
	extra := dialWire(t, tp.Addr().String(), "extra")
	extra.expectClosed()
	if n := testutil.ToFloat64(tp.m.connRefused); n != 1 {
		t.Errorf("connections_refused_total = %v, want 1", n)
	}
	// The three keep working.
	for _, c := range open {
		c.roundTrip(kmsg.NewPtrApiVersionsRequest())
	}
	open[0].nc.Close()
	eventually(t, 10*time.Second, "a slot frees up", func() error {
		c := dialWire(t, tp.Addr().String(), "again")
		c.send(kmsg.NewPtrApiVersionsRequest())
		if _, err := c.tryReadFrame(); err != nil {
			return err
		}
		return nil
	})
}

// TestMaxInflightPerConnection: a client pipelining more requests than the
// limit while the broker holds back its answers gets only the limit
// forwarded; the proxy stops reading it (the next request is read, then
// waits for a slot), and every request is answered in order once the broker
// answers.
func TestMaxInflightPerConnection(t *testing.T) {
	if kafkatest.Backend() != kafkatest.BackendKfake {
		t.Skip("holds the broker's answers with a kfake control function")
	}
	source := kafkatest.NewFake(t, "source", 1)
	release := make(chan struct{})
	var slept atomic.Bool
	source.Fake.ControlKey(int16(kmsg.ListGroups), func(kmsg.Request) (kmsg.Response, error, bool) {
		source.Fake.KeepControl()
		if slept.CompareAndSwap(false, true) {
			source.Fake.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	const limit, total = 3, 12
	tp := startProxy(t, source, nil, func(c *Config) { c.MaxInflightPerConnection = limit })
	c := dialWire(t, tp.Addr().String(), "pipeliner")
	req := kmsg.NewPtrListGroupsRequest()
	req.Version = 3
	var corrs []int32
	for range total {
		corrs = append(corrs, c.send(req))
	}
	// Admitted: the limit forwarded plus the one read and waiting for a
	// slot. Without the limit all twelve would be admitted at once.
	inflight := func() int64 { return tp.Status().InFlightByAPI[int16(kmsg.ListGroups)] }
	eventually(t, 10*time.Second, "the limit reached", func() error {
		if n := inflight(); n < limit+1 {
			return fmt.Errorf("%d admitted", n)
		}
		return nil
	})
	if n := inflight(); n != limit+1 {
		t.Fatalf("%d requests admitted with the broker holding its answers, want %d (limit %d + 1 waiting)", n, limit+1, limit)
	}
	close(release)
	for _, corr := range corrs {
		c.recv(req, corr)
	}
}

// TestIdleTimeout: a silent connection is closed after idleTimeout, but
// one waiting for a long poll longer than that is not.
func TestIdleTimeout(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "idle")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	before := connErrorsByReason(t, tp.reg)

	idle := dialWire(t, tp.Addr().String(), "idle")
	idle.roundTrip(kmsg.NewPtrApiVersionsRequest())
	idle.expectClosed()
	waitOneConnError(t, tp.reg, before, "idle")

	// A fetch waiting 1.4 s for data that never comes outlives the idle
	// timeout: the connection is kept, the fetch answered. Idleness then
	// counts from the answer, not from the last time the proxy looked:
	// a client silent for two thirds of the timeout after it is kept.
	cl := tp.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	var leader int32 = -1
	var id [16]byte
	for _, tt := range md.Topics {
		if tt.Topic != nil && *tt.Topic == topic {
			leader, id = tt.Partitions[0].Leader, tt.TopicID
		}
	}
	var addr string
	for _, b := range md.Brokers {
		if b.NodeID == leader {
			addr = fmt.Sprintf("%s:%d", b.Host, b.Port)
		}
	}
	poller := dialWire(t, addr, "poller")
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 13
	fetch.MaxWaitMillis = 1400
	fetch.MinBytes = 1
	fetch.MaxBytes = 1 << 20
	fetch.SessionEpoch = -1
	ft := kmsg.NewFetchRequestTopic()
	ft.TopicID = id
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	resp := poller.roundTrip(fetch).(*kmsg.FetchResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("fetch error %d", resp.ErrorCode)
	}
	time.Sleep(200 * time.Millisecond)                // the client's think time, not synchronization
	poller.roundTrip(kmsg.NewPtrApiVersionsRequest()) // still open
}

// TestClientIOTimeout: a client that sends half a request and stalls is
// closed after clientIOTimeout; other clients carry on.
func TestClientIOTimeout(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "slow")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.ClientIOTimeout = 300 * time.Millisecond })
	by := newBystanders(t, tp, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	by.check(ctx, t, "before")
	before := connErrorsByReason(t, tp.reg)

	slow := dialWire(t, tp.Addr().String(), "slowloris")
	slow.write(sizePrefix(100))
	slow.write([]byte{0, 3, 0}) // 3 of 100 bytes, then nothing
	slow.expectClosed()
	waitOneConnError(t, tp.reg, before, "client_timeout")
	by.check(ctx, t, "after")
	by.assertNoDisconnects(t)
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.MaxConnections = 0 }, "maxConnections: 0 must be at least 1"},
		{func(c *Config) { c.MaxInflightPerConnection = -1 }, "maxInflightPerConnection: -1"},
		{func(c *Config) { c.IdleTimeout = 0 }, "idleTimeout: 0s must be positive"},
		{func(c *Config) { c.ClientIOTimeout = -time.Second }, "clientIOTimeout: -1s must be positive"},
	} {
		cfg := DefaultConfig()
		cfg.Clusters = []ClusterConfig{{Name: "a", Bootstrap: []string{"127.0.0.1:9092"}}}
		tc.mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}
