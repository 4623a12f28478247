package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Switch moves every client of the proxy to the named cluster and returns
// once the switch is applied. It blocks for at most about DrainTimeout plus
// one metadata round trip to the target.
//
// The steps, in the spirit of a lame-duck drain:
//  1. Learn the target's brokers and API versions first; if it is
//     unreachable, nothing changes and the error says why.
//  2. Stop admitting requests: new ones are parked (in order, per
//     connection), as under a HOLD gate.
//  3. Drain: wait until no request other than a long-poll Fetch is in
//     flight on any connection and no transaction is open, up to
//     DrainTimeout. Produce acks therefore come from the old cluster before
//     anything reaches the new one. Requests that continue an open
//     transaction keep flowing to the old cluster meanwhile; requests that
//     would start one are parked (txn.go). If a transaction is still open
//     at the deadline (or its first request, in flight then, is answered
//     before step 4 ends) the switch fails with ErrOpenTransactions and the
//     proxy stays on the old cluster: a switch lands only between
//     transactions.
//  4. Abandon every upstream connection: in-flight Fetches are answered
//     early by the proxy with an empty response (the client fetches the
//     same offsets again from the new cluster); a connection with anything
//     else still in flight past the deadline is closed — the only
//     connections a switch closes.
//  5. Flip: raise the target's epoch offset above every epoch presented so
//     far, make it active, and release the parked requests onto it.
//
// If ctx ends before the flip, the switch is abandoned and the proxy stays
// on the old cluster.
func (p *Proxy) Switch(ctx context.Context, to string) (SwitchReport, error) {
	target, ok := p.upstreams[to]
	if !ok {
		return SwitchReport{}, fmt.Errorf("switch to %q: %w", to, ErrUnknownCluster)
	}
	if !p.switchMu.TryLock() {
		return SwitchReport{}, fmt.Errorf("switch to %q: %w", to, ErrSwitchInProgress)
	}
	defer p.switchMu.Unlock()

	p.mu.Lock()
	if p.closed || p.runCtx == nil {
		p.mu.Unlock()
		return SwitchReport{}, fmt.Errorf("switch to %q: %w", to, ErrClosed)
	}
	from := p.active
	p.mu.Unlock()
	rep := SwitchReport{From: from.name, To: to, Started: time.Now()}
	if from == target {
		rep.Applied = rep.Started
		return rep, nil
	}
	log := p.log.With(zap.String("from", from.name), zap.String("to", to))

	// 1. The target must answer before anything stops.
	rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	err := target.refresh(rctx)
	cancel()
	if err != nil {
		return SwitchReport{}, fmt.Errorf("switch to %q: %w", to, err)
	}
	p.mapBrokers(target)

	// 2. Stop admitting.
	p.mu.Lock()
	p.switching = true
	p.broadcastLocked()
	conns := make([]*clientConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.earlyFetches.Store(0)
	log.Info("switch: draining", zap.Int("connections", len(conns)))

	// 3. Drain everything but long-poll fetches.
	rep.Drained = int(nonFetchInflight(conns))
	drainCtx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	waitFor(drainCtx, func() bool { return nonFetchInflight(conns) == 0 && p.pids.txns.openCount() == 0 })
	cancel()
	undo := func() {
		p.mu.Lock()
		p.switching = false
		p.broadcastLocked()
		p.mu.Unlock()
	}
	if ctx.Err() != nil {
		undo()
		return SwitchReport{}, fmt.Errorf("switch to %q abandoned before the flip: %w", to, ctx.Err())
	}
	// Nothing starts a transaction while the switch drains; only the
	// answer to one that began before and is still in flight can open one
	// (txn.go), so the look is repeated once those are answered.
	openErr := func() error {
		if open := p.pids.txns.openIDs(); len(open) > 0 {
			return fmt.Errorf("switch to %q: %w after the %v drain timeout: transactional ids %s",
				to, ErrOpenTransactions, p.cfg.DrainTimeout, strings.Join(open, ", "))
		}
		return nil
	}
	if err := openErr(); err != nil {
		undo()
		return SwitchReport{}, err
	}

	// 4. Abandon the old upstream connections.
	for _, c := range conns {
		if c.inflight.Load()-c.inflightFetch.Load() > 0 {
			rep.ConnectionsClosed++
		}
		c.abandonUpstream()
	}
	// Wait until the writers have answered every abandoned request, so no
	// response of the old cluster is translated after the flip.
	settle, cancel := context.WithTimeout(context.Background(), time.Second)
	waitFor(settle, func() bool { return totalInflight(conns) == 0 })
	cancel()
	if err := openErr(); err != nil {
		// The old upstream connections are abandoned: a new generation
		// makes the next requests dial the old cluster afresh.
		p.mu.Lock()
		p.gen++
		p.mu.Unlock()
		undo()
		return SwitchReport{}, err
	}
	rep.FetchesAnsweredEarly = int(p.earlyFetches.Load())

	// 5. Flip.
	p.pids.markSwitched(target)
	p.members.reset()
	p.usage.switched()
	p.mu.Lock()
	target.epochOffset.Store(p.maxEpoch.Load() + 1)
	p.active = target
	p.gen++
	p.switching = false
	p.switches++
	rep.Applied = time.Now()
	last := rep
	p.lastSwitch = &last
	p.broadcastLocked()
	p.mu.Unlock()

	p.m.switches.WithLabelValues(to).Inc()
	p.m.switchDuration.Observe(rep.Duration().Seconds())
	p.m.activeCluster.WithLabelValues(from.name).Set(0)
	p.m.activeCluster.WithLabelValues(to).Set(1)
	log.Info("switch applied", zap.Duration("took", rep.Duration()), zap.Int("drained", rep.Drained),
		zap.Int("fetches_answered_early", rep.FetchesAnsweredEarly), zap.Int("connections_closed", rep.ConnectionsClosed))
	return rep, nil
}

func (p *Proxy) noteEarlyFetch() { p.earlyFetches.Add(1) }

func nonFetchInflight(conns []*clientConn) int64 {
	var n int64
	for _, c := range conns {
		n += c.inflight.Load() - c.inflightFetch.Load()
	}
	return n
}

func totalInflight(conns []*clientConn) int64 {
	var n int64
	for _, c := range conns {
		n += c.inflight.Load()
	}
	return n
}

// waitFor polls cond every millisecond until it holds or ctx ends. The
// counters it watches are updated on every response, so polling is cheaper
// than signalling on each of them.
func waitFor(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}
