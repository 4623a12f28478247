package controlclient

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
)

// applyLoop applies desired states one at a time, in the order received,
// until ctx ends. A state that failed for a reason that may pass is
// retried with backoff until it applies or a newer one arrives (desired
// states are complete, not deltas, so the newer one supersedes it) — but
// only while the stream is up: without a control plane watching, the proxy
// stays as it is (fail static), and a control plane that comes back sends
// its state again, which starts over. It also logs, once, that StartupWait
// passed without a desired state.
func (c *Client) applyLoop(ctx context.Context) {
	var grace <-chan time.Time
	if c.cfg.StartupWait > 0 {
		t := time.NewTimer(c.cfg.StartupWait)
		defer t.Stop()
		grace = t.C
	}
	bo := newBackoff(c.cfg.MinBackoff, c.cfg.MaxBackoff)
	var (
		retry      *switchyardv1.DesiredState
		retryTimer *time.Timer
		retryC     <-chan time.Time
		attempt    int
	)
	stopRetry := func() {
		if retryTimer != nil {
			retryTimer.Stop()
		}
		retry, retryTimer, retryC, attempt = nil, nil, nil, 0
	}
	defer stopRetry()
	for {
		var batch []*switchyardv1.DesiredState
		select {
		case <-ctx.Done():
			return
		case <-grace:
			grace = nil
			if !c.isReadyFromControl() {
				c.log.Warn("control plane: no desired state applied within the startup wait; serving with the configured state",
					zap.Duration("startup_wait", c.cfg.StartupWait), zap.String("active", c.proxy.Status().ActiveCluster))
			}
			continue
		case <-retryC:
			if !c.isConnected() {
				c.log.Debug("control plane: not retrying a desired state while disconnected", zap.Uint64("version", retry.GetVersion()))
				stopRetry()
				continue
			}
			batch = []*switchyardv1.DesiredState{retry}
			attempt++
		case <-c.wake:
			stopRetry()
			bo.reset()
			c.mu.Lock()
			batch, c.pending = c.pending, nil
			c.mu.Unlock()
		}
		for i, d := range batch {
			err := c.apply(ctx, d, attempt)
			if ctx.Err() != nil {
				return
			}
			// Only the newest state received is worth retrying.
			if i == len(batch)-1 && retryable(err) {
				retry = d
				retryTimer = time.NewTimer(bo.next())
				retryC = retryTimer.C
			}
		}
	}
}

func (c *Client) isReadyFromControl() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// apply brings the proxy to desired state d, or decides it is in force
// already, or refuses it; then it records the outcome and asks for a report
// so the control plane learns it at once. attempt counts earlier failed
// attempts of the same state (0: first), to log a failure once.
//
// Versions:
//   - below the applied version: refused (ErrStaleVersion); nothing changes
//     and the applied version is reported again;
//   - equal to it: in force already if the content is the same (a control
//     plane re-sends its state on every new stream), refused
//     (ErrVersionConflict) if not;
//   - 0 while nothing is applied: the control plane has nothing for this
//     sidecar, which keeps its configured state (and is ready);
//   - above it: applied; on success it becomes the applied version, on
//     failure the applied version stays and the error is reported.
func (c *Client) apply(ctx context.Context, d *switchyardv1.DesiredState, attempt int) error {
	v := d.GetVersion()
	c.mu.Lock()
	applied, appliedState := c.applied, c.appliedState
	c.mu.Unlock()

	var err error
	inForce := false
	start := time.Now()
	switch {
	case v < applied:
		err = fmt.Errorf("desired version %d: %w %d; keeping it", v, ErrStaleVersion, applied)
	case v == 0:
		if proto.Equal(d, &switchyardv1.DesiredState{}) {
			inForce = true
		} else {
			err = fmt.Errorf("%w: version 0 (no desired state) with content %v", ErrInvalidDesiredState, d)
		}
	case v == applied:
		if proto.Equal(d, appliedState) {
			inForce = true
		} else {
			err = fmt.Errorf("desired version %d: %w", v, ErrVersionConflict)
		}
	default:
		err = c.reconcile(ctx, d)
	}
	if err != nil && ctx.Err() != nil {
		return err // shutting down: nothing to report to anyone
	}

	c.mu.Lock()
	if err == nil {
		if !inForce {
			c.applied, c.appliedState = v, proto.Clone(d).(*switchyardv1.DesiredState)
		}
		c.ready = true
		c.applyErr = ""
	} else {
		c.applyErr = err.Error()
	}
	applied = c.applied
	c.mu.Unlock()
	c.m.appliedVersion.Set(float64(applied))
	c.reportNow()

	log := c.log.With(zap.Uint64("version", v), zap.Uint64("applied_version", applied))
	switch {
	case err == nil && inForce:
		log.Debug("control plane: desired state already in force")
	case err == nil:
		log.Info("control plane: desired state applied", zap.String("active", d.GetActiveCluster()),
			zap.Int32s("gate_api_keys", d.GetGate().GetApiKeys()), zap.String("gate_mode", d.GetGate().GetMode()),
			zap.Duration("took", time.Since(start)))
	default:
		c.m.applyErrors.Inc()
		if attempt == 0 {
			log.Warn("control plane: desired state not applied", zap.Bool("will_retry", retryable(err)), zap.Error(err))
		} else {
			log.Debug("control plane: desired state still not applied", zap.Int("attempt", attempt+1), zap.Error(err))
		}
	}
	return err
}

// reconcile makes the proxy's active cluster and gate those of d. It checks
// everything it can before it changes anything, so a refused state leaves
// the proxy as it was; only a failed switch can leave a gate changed (the
// one meant to cover the switch), which the error report makes visible.
//
// Order: a gate that d adds goes on before the switch and one that d lifts
// comes off after it, and while the switch runs, every key blocked before
// or after stays blocked. So whether the control plane sends gate, switch
// and release as three versions (its normal cutover) or folds them into
// one, no client request reaches the new cluster while a gate meant to
// cover the move is missing, and none blocked by the old gate is released
// onto the old cluster on the way out.
func (c *Client) reconcile(ctx context.Context, d *switchyardv1.DesiredState) error {
	active := d.GetActiveCluster()
	if active == "" {
		return fmt.Errorf("%w: no active cluster", ErrInvalidDesiredState)
	}
	st := c.proxy.Status()
	names := make([]string, 0, len(st.Clusters))
	for _, cl := range st.Clusters {
		names = append(names, cl.Name)
	}
	if !slices.Contains(names, active) {
		return fmt.Errorf("active cluster %q: %w (configured: %s)", active, proxy.ErrUnknownCluster, strings.Join(names, ", "))
	}
	want, err := admin.GateFromProto(d.GetGate())
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	cur := st.Gate

	if st.ActiveCluster != active {
		if during := unionGate(cur, want); !sameGate(during, cur) {
			if err := c.proxy.SetGate(during); err != nil {
				return fmt.Errorf("gate for the switch: %w", err)
			}
			cur = during
		}
		rep, err := c.proxy.Switch(ctx, active)
		if err != nil {
			return err // the proxy's error names the switch and its target
		}
		c.log.Info("control plane: switch applied", zap.String("from", rep.From), zap.String("to", rep.To),
			zap.Duration("duration", rep.Duration()), zap.Int("drained", rep.Drained),
			zap.Int("connections_closed", rep.ConnectionsClosed))
	}

	switch {
	case !want.IsZero() && !sameGate(want, cur):
		if err := c.proxy.SetGate(want); err != nil {
			return fmt.Errorf("set gate: %w", err)
		}
	case want.IsZero() && !cur.IsZero():
		c.proxy.ClearGate()
	}
	return nil
}

// unionGate is the gate that keeps a switch covered: every key of a and b
// blocked, each in the mode b gives it if b blocks it (it is where the
// state is going), else in the mode a gives it. So a request held before
// the switch stays held through it unless b refuses its key, and a key b
// refuses is refused from before the switch. The budget is b's if b holds
// any key, else a's.
func unionGate(a, b proxy.Gate) proxy.Gate {
	switch {
	case b.IsZero():
		return a
	case a.IsZero():
		return b
	}
	var hold, reject []int16
	for _, k := range slices.Concat(a.Keys(), b.Keys()) {
		m, ok := b.ModeFor(k)
		if !ok {
			m, _ = a.ModeFor(k)
		}
		if m == proxy.GateHold {
			hold = append(hold, k)
		} else {
			reject = append(reject, k)
		}
	}
	u := proxy.Gate{APIKeys: hold, Mode: proxy.GateHold, RejectKeys: reject, HoldBudget: a.HoldBudget,
		FetchWaitsForTransactions: a.FetchWaitsForTransactions}
	if holdsAny(b) {
		u.HoldBudget = b.HoldBudget
	}
	if b.Blocks(fetchKey) {
		// Whether Fetch waits for transactions goes with its mode.
		u.FetchWaitsForTransactions = b.FetchWaitsForTransactions
	}
	return u.Canonical()
}

// fetchKey is Kafka's Fetch API key.
const fetchKey = 1

// holdsAny reports whether g holds (HOLD) any key.
func holdsAny(g proxy.Gate) bool {
	g = g.Canonical()
	return g.Mode == proxy.GateHold && len(g.APIKeys) > 0
}

// sameGate reports whether a and b block the same keys the same way (see
// proxy.Gate.Equal); no gate equals no gate whatever its mode.
func sameGate(a, b proxy.Gate) bool { return a.Equal(b) }
