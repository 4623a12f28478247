package controlclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
)

// Proxy is what the Client needs of the proxy core; *proxy.Proxy satisfies
// it. Implementations must be safe for concurrent use: the Client reads
// Status while it applies a desired state, and the admin API may call in
// at the same time.
type Proxy interface {
	// Status returns a point-in-time view of the proxy.
	Status() proxy.Status
	// Switch moves the proxy to the named cluster and blocks until the
	// switch is applied, fails, or ctx ends.
	Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error)
	// SetGate replaces the gate in force.
	SetGate(g proxy.Gate) error
	// ClearGate lifts the gate in force, if any.
	ClearGate()
	// ExtendHold keeps held requests from expiring before until (a hold
	// lease), within the proxy's maxHold.
	ExtendHold(until time.Time)
}

// Features are what this sidecar announces to the control plane in its
// first message: it understands per-key gate modes and
// fetch_waits_for_transactions, and honours hold leases.
var Features = []switchyardv1.SidecarFeature{
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_REJECT_KEYS,
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_FETCH_WAITS_FOR_TRANSACTIONS,
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_HOLD_LEASE,
}

// Client keeps one proxy in the state the control plane wants. Create it
// with New, run it with Run (once); Ready and State are safe to call from
// any goroutine at any time.
//
// Two goroutines of Run's do the work: the applier, which applies desired
// states one at a time in the order received, and the stream loop, which
// holds the watch stream (one receiver and one sender goroutine per
// stream) and reconnects. They share the fields under mu. The applier
// outlives streams, so a switch in progress is not abandoned because the
// control plane went away.
type Client struct {
	cfg   Config
	creds credentials.TransportCredentials // TLS or plaintext
	proxy Proxy
	log   *zap.Logger
	m     *metrics

	wake   chan struct{} // capacity 1: pending grew
	report chan struct{} // capacity 1: the status should be sent now

	mu           sync.Mutex
	started      time.Time // when Run began; zero before
	connected    bool      // a stream is up (a response arrived on it)
	ready        bool      // a desired state is in force
	applied      uint64
	appliedState *switchyardv1.DesiredState // content of version applied
	received     uint64                     // version of the newest desired state received
	applyErr     string
	pending      []*switchyardv1.DesiredState // received, not yet applied
}

// State is what the Client has applied, as reported to the control plane.
type State struct {
	// AppliedVersion is the version of the last desired state applied (0:
	// none).
	AppliedVersion uint64
	// ApplyError says why the last desired state received was not applied;
	// empty if it was.
	ApplyError string
}

// New builds a Client for p. Its metrics are registered on reg; a nil
// logger logs nothing. New does not connect; Run does.
func New(cfg Config, p Proxy, reg prometheus.Registerer, logger *zap.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("control client config: %w", err)
	}
	if p == nil {
		return nil, errors.New("control client: nil Proxy")
	}
	if reg == nil {
		return nil, errors.New("control client: nil prometheus.Registerer")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	creds := insecure.NewCredentials()
	if cfg.TLS.Enabled() {
		tlsCfg, err := tlsfiles.ClientConfig(cfg.TLS.ForAddr(cfg.Address), tlsfiles.OnReloadError(func(err error) {
			logger.Error("control client: TLS files changed but do not load", zap.Error(err))
		}))
		if err != nil {
			return nil, fmt.Errorf("control client tls: %w", err)
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("control client metrics: %w", err)
	}
	cfg.Labels = maps.Clone(cfg.Labels)
	return &Client{
		creds:  creds,
		cfg:    cfg,
		proxy:  p,
		log:    logger.With(zap.String("control", cfg.Address)),
		m:      m,
		wake:   make(chan struct{}, 1),
		report: make(chan struct{}, 1),
	}, nil
}

// Ready returns nil once the proxy may take clients as far as the control
// plane is concerned: a desired state from the control plane is in force,
// or StartupWait has passed since Run began without one (the proxy then
// serves with its configured state: fail static). Until then it says what
// it waits for. Once ready, the Client stays ready.
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.ready:
		return nil
	case c.started.IsZero():
		return errors.New("control plane client not running")
	case time.Since(c.started) >= c.cfg.StartupWait:
		return nil
	}
	return fmt.Errorf("waiting up to %v for the control plane's desired state", c.cfg.StartupWait)
}

// State returns what the Client has applied.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{AppliedVersion: c.applied, ApplyError: c.applyErr}
}

// Run connects to the control plane and keeps the proxy in the desired
// state until ctx is cancelled. It reconnects on its own, with backoff,
// however often the stream breaks; it returns nil once ctx is cancelled
// and every goroutine it started has stopped (a switch being applied is
// abandoned, as Proxy.Switch does when its ctx ends). It returns an error
// only if it cannot start. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if !c.started.IsZero() {
		c.mu.Unlock()
		return errors.New("control client: Run called twice")
	}
	c.started = time.Now()
	c.mu.Unlock()

	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(c.creds),
		// gRPC's own reconnect backoff (1 s to 120 s by default) would
		// otherwise decide when a lost control plane is retried.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: c.cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.cfg.MaxBackoff,
			},
			MinConnectTimeout: 10 * time.Second,
		}),
		// A control plane that vanished without closing the connection
		// (node lost, network cut) is noticed within 40 s rather than when
		// TCP gives up, minutes later. The control plane must permit pings
		// this often (keepalive.EnforcementPolicy{MinTime: <= 30s}).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if c.cfg.Token != "" {
		// With TLS, gRPC itself refuses to send the token over anything
		// else; without it, Validate allowed plaintext (loopback, or
		// AllowPlaintextToken).
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: c.cfg.Token, requireTLS: c.cfg.TLS.Enabled()}))
	}
	cc, err := grpc.NewClient(c.cfg.Address, opts...)
	if err != nil {
		return fmt.Errorf("control client: %s: %w", c.cfg.Address, err)
	}
	defer cc.Close() //nolint:errcheck // closing the channel at exit; nothing to do about an error
	sidecars := switchyardv1.NewSidecarServiceClient(cc)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.applyLoop(ctx)
	}()
	defer wg.Wait()

	c.log.Info("control plane: connecting", zap.String("app", c.cfg.App), zap.String("instance", c.cfg.Instance))
	var (
		bo       = newBackoff(c.cfg.MinBackoff, c.cfg.MaxBackoff)
		down     time.Time // start of the current outage; zero while connected
		attempts int       // failed attempts in the current outage
		ever     bool      // connected at least once
	)
	onUp := func() {
		c.setConnected(true)
		switch {
		case !ever:
			c.log.Info("control plane: connected")
		default:
			c.log.Info("control plane: reconnected", zap.Duration("after", time.Since(down)), zap.Int("attempts", attempts))
		}
		ever, down, attempts = true, time.Time{}, 0
	}
	for {
		up, err := c.session(ctx, sidecars, onUp)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if up {
			bo.reset()
		}
		applied := c.State().AppliedVersion
		switch {
		case up:
			down = time.Now()
			c.log.Warn("control plane: stream lost; keeping the applied state and reconnecting",
				zap.Uint64("applied_version", applied), zap.Error(err))
		case down.IsZero():
			// Not connected yet since Run began: the outage starts with
			// this attempt. Logged once.
			attempts++
			down = time.Now()
			c.log.Warn("control plane: cannot connect; keeping the applied state and retrying",
				zap.Uint64("applied_version", applied), zap.Error(err))
		default:
			attempts++
			c.log.Debug("control plane: reconnect failed", zap.Int("attempt", attempts), zap.Error(err))
		}
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) setConnected(up bool) {
	c.mu.Lock()
	c.connected = up
	c.mu.Unlock()
	if up {
		c.m.connected.Set(1)
	} else {
		c.m.connected.Set(0)
	}
}

func (c *Client) isConnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// session holds one watch stream until it breaks or ctx ends. It sends the
// identity with the first message, then reports the status every
// StatusInterval and whenever the applier asks, while a second goroutine
// hands every desired state received to the applier. onUp is called (from
// the receiving goroutine) when the first response arrives; up says whether
// one did. The returned error says why the stream ended.
func (c *Client) session(ctx context.Context, sidecars switchyardv1.SidecarServiceClient, onUp func()) (up bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(sctx)
	stream, err := sidecars.Connect(gctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(c.request(true)); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream ended; its status comes from Recv.
			_, err = stream.Recv()
		}
		return false, fmt.Errorf("send identity: %w", err)
	}
	var gotOne atomic.Bool
	g.Go(func() error {
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return errors.New("the control plane ended the stream")
			}
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			if !gotOne.Swap(true) {
				onUp()
			}
			// A response without a desired state is not an error: it
			// proves the stream alive and asks for nothing, or renews a
			// hold lease.
			if d := resp.GetDesired(); d != nil {
				c.enqueue(d)
			}
			if l := resp.GetHoldLease(); l != nil {
				c.lease(l)
			}
		}
	})
	g.Go(func() error {
		t := time.NewTicker(c.cfg.StatusInterval)
		defer t.Stop()
		// While a gate is in force with gated requests still in flight, the
		// control plane waits for them to end (a cutover's drain): watch
		// closely and report the moment they have, not at the next tick.
		// The close watch runs only while a gate is applied: an idle
		// sidecar does not wake every 10 ms.
		drain := time.NewTicker(drainPoll)
		defer drain.Stop()
		busy := false
		for {
			var drainC <-chan time.Time
			if c.gateApplied() {
				drainC = drain.C
			}
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			case <-c.report:
			case <-drainC:
				was := busy
				busy = gatedInFlight(c.proxy.Status())
				if busy || !was {
					continue
				}
			}
			if err := stream.Send(c.request(false)); err != nil {
				if errors.Is(err, io.EOF) {
					return nil // the stream ended; the receiver says why
				}
				return fmt.Errorf("send status: %w", err)
			}
		}
	})
	err = g.Wait()
	return gotOne.Load(), err
}

// request builds a ConnectRequest; first adds the identity and the
// configured clusters. The applied version is read before the status, so a
// report never claims a version whose effect its status does not show yet
// (it may show the effect before claiming the version).
func (c *Client) request(first bool) *switchyardv1.ConnectRequest {
	c.mu.Lock()
	applied, applyErr := c.applied, c.applyErr
	c.mu.Unlock()
	st := c.proxy.Status()
	req := &switchyardv1.ConnectRequest{
		AppliedVersion: applied,
		ApplyError:     applyErr,
		Status:         admin.StatusToProto(st),
	}
	if first {
		req.Identity = &switchyardv1.SidecarIdentity{
			App:      c.cfg.App,
			Instance: c.cfg.Instance,
			Labels:   maps.Clone(c.cfg.Labels),
		}
		for _, cl := range st.Clusters {
			req.Clusters = append(req.Clusters, cl.Name)
		}
		req.Features = slices.Clone(Features)
	}
	return req
}

// lease honours a hold lease: held requests are kept until its validity
// runs out (within the proxy's maxHold), if it is for the desired state
// the sidecar applied, or for the newest one received and not yet applied
// (the control plane leases what it last sent; the switch that applies it
// may still run). A lease for any other version is about a state this
// sidecar is not in — one it refused, or one it moved past — and is
// ignored, as is one without a positive validity.
func (c *Client) lease(l *switchyardv1.HoldLease) {
	v, d := l.GetVersion(), l.GetValidFor()
	c.mu.Lock()
	ok := v != 0 && (v == c.applied || (v > c.applied && v == c.received))
	c.mu.Unlock()
	if !ok || d.CheckValid() != nil || d.AsDuration() <= 0 {
		c.m.leases.WithLabelValues("ignored").Inc()
		c.log.Debug("control plane: hold lease ignored", zap.Uint64("version", v), zap.Duration("valid_for", d.AsDuration()))
		return
	}
	c.m.leases.WithLabelValues("honoured").Inc()
	c.proxy.ExtendHold(time.Now().Add(d.AsDuration()))
}

// enqueue hands a desired state to the applier. It never blocks: the queue
// holds what one control plane sends between two applies, a few states.
func (c *Client) enqueue(d *switchyardv1.DesiredState) {
	c.m.desiredVersion.Set(float64(d.GetVersion()))
	c.mu.Lock()
	c.pending = append(c.pending, d)
	c.received = d.GetVersion()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// reportNow asks the stream's sender for a report at once.
func (c *Client) reportNow() {
	select {
	case c.report <- struct{}{}:
	default:
	}
}

// bearerToken sends "authorization: Bearer <token>" with every call.
type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false only when Config.Validate allowed the
// token over plaintext (see Config.Token); gRPC refuses to send it over an
// insecure connection otherwise.
func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

// expBackoff doubles a delay from min up to max; each delay is drawn
// uniformly from its upper half, so sidecars that lost the same control
// plane do not come back in step.
type expBackoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *expBackoff {
	return &expBackoff{min: min, max: max, cur: min}
}

func (b *expBackoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b *expBackoff) reset() { b.cur = b.min }

// drainPoll is how often the sender looks for gated requests draining.
const drainPoll = 10 * time.Millisecond

// gatedInFlight reports whether a gate is in force while requests of a
// gated key are still in flight.
func gatedInFlight(st proxy.Status) bool {
	for _, k := range st.Gate.Keys() {
		if st.InFlightByAPI[k] > 0 {
			return true
		}
	}
	return false
}

// gateApplied reports whether the desired state in force has a gate (the
// proxy's status is only looked at then).
func (c *Client) gateApplied() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.appliedState.GetGate() != nil
}
