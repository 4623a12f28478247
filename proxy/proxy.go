package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/internal/saslserver"
)

// Proxy is a wire-level Kafka proxy in front of one or more upstream
// clusters, one of them active. Create it with New, serve with Run; the
// control methods (Status, Switch, SetGate, ClearGate, Ready) are safe for
// concurrent use.
//
// Lock order: switchMu before mu. upstream.mu is a leaf.
type Proxy struct {
	cfg       Config
	log       *zap.Logger
	m         *metrics
	clusterID string
	ln        net.Listener // bootstrap listener
	upstreams map[string]*upstream
	order     []string // cluster names in config order

	// maxEpoch is the highest leader epoch presented to any client.
	maxEpoch atomic.Int32
	// inflight counts admitted, unanswered requests per API key (keys
	// beyond the array share its last slot).
	inflight [96]atomic.Int64
	// heldBytes is the size of the requests parked now by HOLD gates and a
	// draining switch, checked against Config.MaxHeldBytes (the
	// held_bytes gauge shows it).
	heldBytes atomic.Int64
	// lastRefusedLog is when a refused connection was last logged (unix ns).
	lastRefusedLog atomic.Int64
	// earlyFetches counts fetches answered early during the current switch.
	earlyFetches atomic.Int64
	// topicNames maps virtual topic ids to names ([16]byte → string).
	topicNames sync.Map
	// vleaders: each partition's stable virtual leader (vleaders.go).
	vleaders vleaderTable
	// pids maps the producer ids clients hold to each cluster's own.
	pids *producerIDs
	// members tells group members of the new cluster from stale ones.
	members groupMembers
	// usage records what the clients do (Status.Usage).
	usage *usage
	// clientUsers are the local users when client SASL is terminated.
	clientUsers *saslserver.Users
	// authLimit counts failed client authentications per address (nil:
	// no limit).
	authLimit *authLimiter
	// clientTLS, when set, serves the client listeners over TLS.
	clientTLS *tls.Config

	switchMu sync.Mutex // held for the whole of a switch

	mu          sync.Mutex
	active      *upstream
	gen         uint64 // bumped by every switch
	gate        Gate
	holdLease   time.Time // held requests may stay parked until then (ExtendHold); zero: none
	switching   bool
	stateCh     chan struct{} // closed and replaced when active, gate or switching change
	vbrokers    []*vbroker    // indexed by virtual node id
	toVirtual   map[string]map[int32]int32
	fromVirtual map[string]map[int32]int32
	conns       map[*clientConn]struct{}
	switches    uint64
	lastSwitch  *SwitchReport
	ready       bool
	runCtx      context.Context
	closed      bool

	wg sync.WaitGroup // accept loops and connections
}

// vbroker is one virtual broker: a local listener clients dial.
type vbroker struct {
	id   int32
	ln   net.Listener
	host string
	port int32
}

// New validates cfg, binds the bootstrap listener and prepares the upstream
// clusters. It does not contact any cluster; Run does. Metrics are
// registered on reg (a fresh prometheus.NewRegistry() in tests).
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("proxy metrics: %w", err)
	}
	p := &Proxy{
		cfg:         cfg,
		log:         log,
		m:           m,
		upstreams:   map[string]*upstream{},
		stateCh:     make(chan struct{}),
		toVirtual:   map[string]map[int32]int32{},
		fromVirtual: map[string]map[int32]int32{},
		conns:       map[*clientConn]struct{}{},
		gate:        cfg.Gate.Canonical(),
		pids:        newProducerIDs(cfg, m),
		usage:       newUsage(),
	}
	p.clusterID = cfg.ClusterID
	if p.clusterID == "" {
		p.clusterID = derivedClusterID(cfg.Clusters)
	}
	for _, c := range cfg.Clusters {
		u, err := newUpstream(c, cfg.DialTimeout, log)
		if err != nil {
			p.closeUpstreams()
			return nil, err
		}
		p.upstreams[c.Name] = u
		p.order = append(p.order, c.Name)
		p.toVirtual[c.Name] = map[int32]int32{}
		p.fromVirtual[c.Name] = map[int32]int32{}
		m.activeCluster.WithLabelValues(c.Name).Set(0)
	}
	p.active = p.upstreams[cfg.Active]
	m.activeCluster.WithLabelValues(cfg.Active).Set(1)
	if err := p.setupClientAuth(); err != nil {
		p.closeUpstreams()
		return nil, err
	}
	ln, err := p.listen(cfg.Listen)
	if err != nil {
		p.closeUpstreams()
		return nil, err
	}
	p.ln = ln
	return p, nil
}

// derivedClusterID is a stable virtual cluster id for a set of clusters: the
// same configuration yields the same id across restarts.
func derivedClusterID(clusters []ClusterConfig) string {
	names := make([]string, 0, len(clusters))
	for _, c := range clusters {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	sum := sha256.Sum256([]byte("switchyard/cluster-id\x00" + strings.Join(names, "\x00")))
	return "switchyard-" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

func (p *Proxy) closeUpstreams() {
	for _, u := range p.upstreams {
		u.close()
	}
}

// Addr returns the bootstrap listener's address.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// ClusterID returns the virtual cluster id clients see.
func (p *Proxy) ClusterID() string { return p.clusterID }

// Run serves clients until ctx is cancelled, then closes every listener and
// client connection and returns once all of the proxy's goroutines have
// stopped. Run returns nil on cancellation. It may be called once.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.runCtx != nil || p.closed {
		p.mu.Unlock()
		return errors.New("proxy: Run called twice or after Close")
	}
	p.runCtx = ctx
	p.mu.Unlock()

	p.wg.Add(2)
	go p.acceptLoop(ctx, p.ln, -1)
	go p.refreshLoop(ctx)

	<-ctx.Done()
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for _, vb := range p.vbrokers {
		if vb != nil && vb.ln != nil {
			vb.ln.Close()
		}
	}
	for c := range p.conns {
		c.close()
	}
	p.broadcastLocked()
	p.mu.Unlock()
	// Closing the sockets ends every connection's goroutines at their next
	// read or write. The wait is bounded all the same (StopTimeout): a
	// stop must not depend on every goroutine behaving, so that SIGTERM
	// ends the process in time.
	done := make(chan struct{})
	go func() { // ends when the last connection goroutine does
		p.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(p.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		p.closeUpstreams()
		return fmt.Errorf("%w: %d client connections still being served after the stop timeout (%v)", ErrStopTimeout, n, p.cfg.StopTimeout)
	}
	p.closeUpstreams()
	return nil
}

// Close releases a proxy that was never Run: its listeners and upstream
// clients. After Run has started, cancel Run's context instead; Close then
// does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.runCtx != nil || p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for _, vb := range p.vbrokers {
		if vb != nil && vb.ln != nil {
			vb.ln.Close()
		}
	}
	p.mu.Unlock()
	p.closeUpstreams()
}

// refreshLoop learns every cluster's brokers, topic ids and API versions:
// at once, then every 10 seconds (and retrying sooner after an error).
// Brokers that appear upstream get virtual brokers and listeners here, or
// as soon as a client's metadata response names them.
func (p *Proxy) refreshLoop(ctx context.Context) {
	defer p.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		ok := true
		for _, name := range p.order {
			u := p.upstreams[name]
			rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
			err := u.refresh(rctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				ok = false
				p.log.Warn("cluster refresh", zap.String("cluster", name), zap.Error(err))
				continue
			}
			p.mapBrokers(u)
		}
		p.mu.Lock()
		if p.active.apiVersions() != nil && len(p.active.brokerIDs()) > 0 {
			p.ready = true
		}
		p.mu.Unlock()
		wait := 10 * time.Second
		if p.cfg.metadataRefresh > 0 {
			wait = p.cfg.metadataRefresh
		}
		if !ok {
			wait = backoff
			backoff = min(backoff*2, 5*time.Second)
		} else {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// mapBrokers gives every known broker of u a virtual broker, lowest real
// node ids first so the first mapping is predictable.
func (p *Proxy) mapBrokers(u *upstream) {
	for _, id := range u.brokerIDs() {
		p.virtualFor(u, id)
	}
}

// virtualFor returns the virtual node id for a real node id of cluster u,
// allocating the lowest virtual id not yet used by u (and its listener) on
// first sight. Negative ids (no leader) pass through.
//
// Every node id in every response makes a virtual broker, so a cluster
// (or a broker gone wrong, or anyone in the middle of a plaintext
// connection) naming ids without end would make the proxy bind listeners
// without end. Past MaxVirtualBrokers ids of one cluster, a new id is
// presented as -1, which clients read as "no leader" or "coordinator not
// available" and retry; it is logged and counted.
func (p *Proxy) virtualFor(u *upstream, real int32) int32 {
	if real < 0 {
		return real
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.toVirtual[u.name][real]; ok {
		return v
	}
	used := p.fromVirtual[u.name]
	if len(used) >= p.cfg.MaxVirtualBrokers {
		p.m.brokersRefused.Inc()
		if u.brokerCapLogged.CompareAndSwap(false, true) {
			p.log.Error("cluster names more brokers than maxVirtualBrokers; further node ids are presented as -1 (no leader)",
				zap.String("cluster", u.name), zap.Int("maxVirtualBrokers", p.cfg.MaxVirtualBrokers), zap.Int32("node", real))
		}
		return -1
	}
	v := int32(0)
	for {
		if _, taken := used[v]; !taken {
			break
		}
		v++
	}
	p.toVirtual[u.name][real] = v
	used[v] = real
	p.ensureBrokerLocked(v)
	return v
}

// hasBroker reports whether virtual broker v has a broker of cluster u
// behind it, with an address to dial.
func (p *Proxy) hasBroker(u *upstream, v int32) bool {
	_, _, ok := p.ownBroker(u, v)
	return ok
}

// ownBroker returns the address and node id of the broker of cluster u
// behind virtual broker v, if it has one with a known address.
func (p *Proxy) ownBroker(u *upstream, v int32) (addr string, node int32, ok bool) {
	if v < 0 {
		return "", -1, false
	}
	r, ok := p.realFor(u, v)
	if !ok {
		return "", -1, false
	}
	a, ok := u.brokerAddr(r)
	return a, r, ok
}

// realFor returns the real node id of cluster u behind virtual id v.
func (p *Proxy) realFor(u *upstream, v int32) (int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.fromVirtual[u.name][v]
	return r, ok
}

// ensureBrokerLocked binds the listener of virtual broker v if it has none.
func (p *Proxy) ensureBrokerLocked(v int32) {
	for int(v) >= len(p.vbrokers) {
		p.vbrokers = append(p.vbrokers, nil)
	}
	if p.vbrokers[v] != nil {
		return
	}
	addr := p.brokerListenAddr(v)
	ln, err := p.listen(addr)
	if err != nil {
		// The broker stays without a listener; clients told about it fail
		// to connect to it and fall back to other brokers. Status shows it.
		p.log.Error("virtual broker listener", zap.Int32("node", v), zap.String("addr", addr), zap.Error(err))
		p.vbrokers[v] = &vbroker{id: v}
		return
	}
	tcp := ln.Addr().(*net.TCPAddr)
	host := p.cfg.AdvertiseHost
	if host == "" || p.cfg.BrokerAddressBase != "" {
		host = tcp.IP.String()
	}
	vb := &vbroker{id: v, ln: ln, host: host, port: int32(tcp.Port)}
	p.vbrokers[v] = vb
	if p.runCtx != nil && !p.closed {
		p.wg.Add(1)
		go p.acceptLoop(p.runCtx, ln, v)
	} else if p.closed {
		ln.Close()
	}
	p.log.Info("virtual broker listening", zap.Int32("node", v), zap.String("addr", net.JoinHostPort(host, strconv.Itoa(tcp.Port))))
}

// brokerListenAddr is where virtual broker v listens.
func (p *Proxy) brokerListenAddr(v int32) string {
	host, portStr, _ := net.SplitHostPort(p.cfg.Listen)
	port, _ := strconv.Atoi(portStr)
	if p.cfg.BrokerAddressBase != "" {
		ip := net.ParseIP(p.cfg.BrokerAddressBase).To4()
		n := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
		n += uint32(v)
		ip = net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		return net.JoinHostPort(ip.String(), portStr)
	}
	switch {
	case p.cfg.BrokerPortBase == -1 || (p.cfg.BrokerPortBase == 0 && port == 0):
		return net.JoinHostPort(host, "0")
	case p.cfg.BrokerPortBase == 0:
		return net.JoinHostPort(host, strconv.Itoa(port+1+int(v)))
	default:
		return net.JoinHostPort(host, strconv.Itoa(p.cfg.BrokerPortBase+int(v)))
	}
}

// brokerAddress returns the advertised address of virtual broker v. A
// virtual broker whose listener could not be bound is given the bootstrap
// listener's address: a client must never be handed an upstream address,
// which would take it around the proxy. (Its requests then reach some
// broker of the cluster and get ordinary leader errors; the bind error is
// logged.)
func (p *Proxy) brokerAddress(v int32) (string, int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v >= 0 && int(v) < len(p.vbrokers) && p.vbrokers[v] != nil && p.vbrokers[v].ln != nil {
		vb := p.vbrokers[v]
		return vb.host, vb.port, true
	}
	tcp := p.ln.Addr().(*net.TCPAddr)
	host := p.cfg.AdvertiseHost
	if host == "" {
		host = tcp.IP.String()
	}
	return host, int32(tcp.Port), true
}

// upstreamAddrFor returns the real broker a connection to virtual broker v
// (or the bootstrap listener, v < 0) should reach on cluster u: its address,
// its node id (-1 when only a bootstrap address is known), and whether it is
// v's own broker.
func (p *Proxy) upstreamAddrFor(u *upstream, v int32) (addr string, node int32, own bool) {
	if a, r, ok := p.ownBroker(u, v); ok {
		return a, r, true
	}
	// The bootstrap listener, or a virtual broker the cluster has no broker
	// for (it has fewer brokers than the previous one): any broker will do
	// for cluster-wide requests; requests for partitions it does not lead
	// are answered by the proxy there (clientConn.orphanAnswer), and the
	// client's next metadata request moves it on.
	ids := u.brokerIDs()
	if len(ids) > 0 {
		id := ids[int(max(v, 0))%len(ids)]
		if a, ok := u.brokerAddr(id); ok {
			return a, id, false
		}
	}
	return u.cfg.Bootstrap[0], -1, false
}

func (p *Proxy) acceptLoop(ctx context.Context, ln net.Listener, vnode int32) {
	defer p.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				p.log.Error("accept", zap.Int32("node", vnode), zap.Error(err))
			}
			return
		}
		c := p.newClientConn(nc, vnode)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		if len(p.conns) >= p.cfg.MaxConnections {
			p.mu.Unlock()
			p.m.connRefused.Inc() // before the close a test may be waiting on
			nc.Close()
			p.warnRefused()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		p.m.connections.Inc()
		p.m.connectionsTot.Inc()
		go func() {
			defer p.wg.Done()
			c.serve(ctx)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
			p.m.connections.Dec()
		}()
	}
}

// warnRefused logs a refused connection, at most once every 10 seconds.
func (p *Proxy) warnRefused() {
	now := time.Now().UnixNano()
	last := p.lastRefusedLog.Load()
	if now-last < int64(10*time.Second) || !p.lastRefusedLog.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("client connection refused: maxConnections reached (counted in connections_refused_total)",
		zap.Int("max_connections", p.cfg.MaxConnections))
}

// broadcastLocked wakes everything waiting on a state change.
func (p *Proxy) broadcastLocked() {
	close(p.stateCh)
	p.stateCh = make(chan struct{})
}

// SetGate replaces the gate in force. Requests already held by a previous
// HOLD gate are re-evaluated against the new one: still held if it holds
// their key (their hold counted from when they were parked, with the new
// gate's budget), refused if it refuses it, forwarded if it does not block
// it. The gate is kept in its canonical form (Gate.Canonical).
func (p *Proxy) SetGate(g Gate) error {
	if err := g.validate(); err != nil {
		return err
	}
	g = g.Canonical()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = g
	p.broadcastLocked()
	p.log.Info("gate set", zap.String("mode", g.Mode.String()), zap.Any("api_keys", g.APIKeys), zap.Any("reject_api_keys", g.RejectKeys),
		zap.Duration("hold_budget", g.HoldBudget), zap.Bool("fetch_waits_for_transactions", g.FetchWaitsForTransactions))
	if g.Mode == GateHold && g.HoldBudget > p.cfg.MaxHold {
		p.log.Warn("the gate's hold budget is above maxHold: holds end at maxHold",
			zap.Duration("hold_budget", g.HoldBudget), zap.Duration("max_hold", p.cfg.MaxHold))
	}
	return nil
}

// ClearGate lifts the gate; held requests are forwarded in arrival order.
// A hold lease ends with it.
func (p *Proxy) ClearGate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = Gate{}
	p.holdLease = time.Time{}
	p.broadcastLocked()
	p.log.Info("gate cleared")
}

// ExtendHold keeps the requests held now or later from expiring before
// until — a control plane's hold lease, renewed while the cutover that
// gated them progresses — but never past Config.MaxHold after each was
// parked. A lease only extends: an until before the one in force changes
// nothing. ClearGate ends it. Without a lease, a held request expires at
// the gate's hold budget.
func (p *Proxy) ExtendHold(until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until.After(p.holdLease) {
		// No wake-up: a waiter's timer fires at its old deadline and the
		// waiter recomputes it then.
		p.holdLease = until
	}
}

// Ready returns nil once the active cluster's metadata has been loaded and
// the proxy serves, or an error saying what it waits for.
func (p *Proxy) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return ErrClosed
	case p.runCtx == nil:
		return errors.New("not running")
	case !p.ready:
		st := p.active.status()
		if st.LastError != "" {
			return fmt.Errorf("waiting for cluster %s: %s", p.active.name, st.LastError)
		}
		return fmt.Errorf("waiting for cluster %s metadata", p.active.name)
	}
	return nil
}

// Status returns a snapshot of the proxy's state.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	st := Status{
		ActiveCluster: p.active.name,
		ClusterID:     p.clusterID,
		Switching:     p.switching,
		Gate:          p.gate.Canonical(), // a copy
		Connections:   int64(len(p.conns)),
		Switches:      p.switches,
	}
	if p.lastSwitch != nil {
		ls := *p.lastSwitch
		st.LastSwitch = &ls
	}
	for k := range p.inflight {
		if n := p.inflight[k].Load(); n != 0 {
			if st.InFlightByAPI == nil {
				st.InFlightByAPI = map[int16]int64{}
			}
			st.InFlightByAPI[int16(k)] = n
		}
	}
	for c := range p.conns {
		st.InFlight += c.inflight.Load()
		st.Held += c.held.Load()
	}
	active := p.active
	type vb struct {
		id   int32
		addr string
		real int32
		ok   bool
	}
	var vbs []vb
	for _, b := range p.vbrokers {
		if b == nil {
			continue
		}
		x := vb{id: b.id, real: -1}
		if b.ln != nil {
			x.addr = net.JoinHostPort(b.host, strconv.Itoa(int(b.port)))
		}
		x.real, x.ok = p.fromVirtual[active.name][b.id]
		if !x.ok {
			x.real = -1
		}
		vbs = append(vbs, x)
	}
	p.mu.Unlock()
	for _, b := range vbs {
		v := VirtualBroker{ID: b.id, Address: b.addr, UpstreamID: b.real}
		if b.ok {
			v.Upstream, _ = active.brokerAddr(b.real)
		}
		st.Brokers = append(st.Brokers, v)
	}
	for _, name := range p.order {
		st.Clusters = append(st.Clusters, p.upstreams[name].status())
	}
	st.Usage = p.usage.snapshot(p.pids.txns)
	return st
}

func (p *Proxy) inflightByKey(key int16) *atomic.Int64 {
	if key < 0 || int(key) >= len(p.inflight) {
		return &p.inflight[len(p.inflight)-1]
	}
	return &p.inflight[key]
}

// BrokerAddrs returns the advertised addresses of the virtual brokers.
func (p *Proxy) BrokerAddrs() []string {
	var out []string
	for _, b := range p.Status().Brokers {
		if b.Address != "" {
			out = append(out, b.Address)
		}
	}
	return out
}
