package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// timedProxy is the proxy as its controlclient sees it, with the time of
// every call that matters to a cutover recorded. It satisfies
// controlclient.Proxy.
type timedProxy struct {
	*proxy.Proxy

	mu       sync.Mutex
	statusAt []statusCall // each Status call: one per status report, and at the start of each apply
	gateAt   []time.Time  // each SetGate, once applied
	clearAt  []time.Time  // each ClearGate, once applied
	switches []switchCall
}

// statusCall is one Status call: when, and how many Produce requests were
// in flight (what the drain waits on).
type statusCall struct {
	at              time.Time
	produceInFlight int64
}

type switchCall struct {
	start, end time.Time
	err        error
}

func (t *timedProxy) Status() proxy.Status {
	now := time.Now()
	st := t.Proxy.Status()
	t.mu.Lock()
	t.statusAt = append(t.statusAt, statusCall{now, st.InFlightByAPI[0]})
	t.mu.Unlock()
	return st
}

func (t *timedProxy) Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error) {
	start := time.Now()
	rep, err := t.Proxy.Switch(ctx, cluster)
	end := time.Now()
	t.mu.Lock()
	t.switches = append(t.switches, switchCall{start, end, err})
	t.mu.Unlock()
	return rep, err
}

func (t *timedProxy) SetGate(g proxy.Gate) error {
	err := t.Proxy.SetGate(g)
	if err == nil {
		now := time.Now()
		t.mu.Lock()
		t.gateAt = append(t.gateAt, now)
		t.mu.Unlock()
	}
	return err
}

func (t *timedProxy) ClearGate() {
	t.Proxy.ClearGate()
	now := time.Now()
	t.mu.Lock()
	t.clearAt = append(t.clearAt, now)
	t.mu.Unlock()
}

// firstAfter returns the first time in ts at or after t0 (zero if none).
func firstAfter(ts []time.Time, t0 time.Time) time.Time {
	for _, t := range ts {
		if !t.Before(t0) {
			return t
		}
	}
	return time.Time{}
}

// firstIdleAfter returns the first Status call at or after t0 that saw no
// Produce in flight (zero if none).
func firstIdleAfter(calls []statusCall, t0 time.Time) time.Time {
	for _, c := range calls {
		if !c.at.Before(t0) && c.produceInFlight == 0 {
			return c.at
		}
	}
	return time.Time{}
}

// events returns copies of the recorded times.
func (t *timedProxy) events() (status []statusCall, gate, clear []time.Time, switches []switchCall) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]statusCall(nil), t.statusAt...), append([]time.Time(nil), t.gateAt...),
		append([]time.Time(nil), t.clearAt...), append([]switchCall(nil), t.switches...)
}

// sidecar is one proxy with its controlclient.
type sidecar struct {
	proxy  *timedProxy
	addr   string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const benchApp = "bench"

// startSidecar starts a proxy in front of both clusters, active on the
// source, waits until it is ready, and has a controlclient follow the
// control plane at plane.
func startSidecar(ctx context.Context, i int, cl *clusters, plane, token string, o *options, log *zap.Logger) (*sidecar, error) {
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []proxy.ClusterConfig{{Name: "source", Bootstrap: cl.source}, {Name: "target", Bootstrap: cl.target}}
	cfg.Active = "source"
	instance := fmt.Sprintf("sidecar-%02d", i)
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, log.Named(instance), reg)
	if err != nil {
		return nil, err
	}
	sc := &sidecar{proxy: &timedProxy{Proxy: p}}
	rctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		if err := p.Run(rctx); err != nil {
			log.Warn("proxy stopped", zap.String("instance", instance), zap.Error(err))
		}
	}()
	if err := waitUntil(ctx, instance+" ready", 10*time.Millisecond, func() (bool, error) { return p.Ready() == nil, nil }); err != nil {
		sc.stop()
		return nil, err
	}
	sc.addr = p.Addr().String()
	ccfg := controlclient.DefaultConfig()
	ccfg.Address, ccfg.App, ccfg.Instance, ccfg.Token = plane, benchApp, instance, token
	if o.statusInterval > 0 {
		ccfg.StatusInterval = o.statusInterval
	}
	cc, err := controlclient.New(ccfg, sc.proxy, reg, log.Named(instance))
	if err != nil {
		sc.stop()
		return nil, err
	}
	// The controlclient reports on a ticker started with its stream.
	// Sidecars started back to back would tick almost together; ones
	// started at different times (pods) tick at any phase. A random delay
	// below the interval gives the latter.
	delay := rand.N(ccfg.StatusInterval)
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-rctx.Done():
			return
		case <-t.C:
		}
		_ = cc.Run(rctx) // returns nil once rctx ends
	}()
	return sc, nil
}

// stop stops the controlclient and the proxy and waits for both.
func (s *sidecar) stop() {
	s.cancel()
	s.wg.Wait()
}
