package controlclient

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/proxy"
)

// waitTimeout bounds every wait on a condition.
const waitTimeout = 15 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// received is one ConnectRequest as the fake control plane got it.
type received struct {
	stream int // 1 for the first stream the server accepted, and so on
	first  bool
	req    *switchyardv1.ConnectRequest
}

// fakeControl is a SidecarService on 127.0.0.1 that records every message
// and sends the desired states the test pushes on the stream open now.
type fakeControl struct {
	switchyardv1.UnimplementedSidecarServiceServer

	addr string
	srv  *grpc.Server
	push chan *switchyardv1.ConnectResponse

	mu      sync.Mutex
	streams int // streams accepted
	open    int // streams whose handler is running
	auth    []string
	got     []received
}

// startFake serves a fakeControl on addr ("127.0.0.1:0" for any port) until
// stop is called or the test ends.
func startFake(t *testing.T, addr string) *fakeControl {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	f := &fakeControl{addr: ln.Addr().String(), srv: grpc.NewServer(), push: make(chan *switchyardv1.ConnectResponse)}
	switchyardv1.RegisterSidecarServiceServer(f.srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.srv.Serve(ln) // returns when stopped
	}()
	t.Cleanup(func() {
		f.stop()
		<-done
	})
	return f
}

// stop closes the listener and every stream at once, as a crashed control
// plane would.
func (f *fakeControl) stop() { f.srv.Stop() }

func (f *fakeControl) Connect(stream switchyardv1.SidecarService_ConnectServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.mu.Lock()
	f.streams++
	f.open++
	id := f.streams
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		first := true
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			f.mu.Lock()
			f.got = append(f.got, received{stream: id, first: first, req: req})
			f.mu.Unlock()
			first = false
		}
	}()
	for {
		select {
		case m := <-f.push:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-recvErr:
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// send delivers d on the stream open now (waiting for one to open).
func (f *fakeControl) send(t *testing.T, d *switchyardv1.DesiredState) {
	t.Helper()
	f.sendResponse(t, &switchyardv1.ConnectResponse{Desired: d})
}

// sendResponse delivers m on the stream open now (waiting for one to open).
func (f *fakeControl) sendResponse(t *testing.T, m *switchyardv1.ConnectResponse) {
	t.Helper()
	select {
	case f.push <- m:
	case <-time.After(waitTimeout):
		t.Fatalf("no stream took %v within %v", m, waitTimeout)
	}
}

// mark returns how many messages have arrived, for waitRequest.
func (f *fakeControl) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// waitRequest returns the first message after mark that satisfies match.
func (f *fakeControl) waitRequest(t *testing.T, what string, mark int, match func(received) bool) received {
	t.Helper()
	var r received
	waitFor(t, what, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, g := range f.got[mark:] {
			if match(g) {
				r = g
				return true
			}
		}
		return false
	})
	return r
}

// ack waits for the first report after mark that acknowledges version v
// without an error.
func (f *fakeControl) ack(t *testing.T, mark int, v uint64) *switchyardv1.ConnectRequest {
	t.Helper()
	return f.waitRequest(t, fmt.Sprintf("an acknowledgement of version %d", v), mark, func(r received) bool {
		return r.req.GetAppliedVersion() == v && r.req.GetApplyError() == ""
	}).req
}

func (f *fakeControl) openStreams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

// testClient is a running Client and what a test inspects it with.
type testClient struct {
	*Client
	reg    *prometheus.Registry
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// testConfig is the configuration tests start from: fast backoff, and no
// periodic reports (a test that wants them sets StatusInterval), so every
// message after the first answers something the test did.
func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.Address = addr
	cfg.App = "orders"
	cfg.Instance = "orders-0"
	cfg.Labels = map[string]string{"role": "producer"}
	cfg.StatusInterval = time.Hour
	cfg.StartupWait = 0
	cfg.MinBackoff = 5 * time.Millisecond
	cfg.MaxBackoff = 40 * time.Millisecond
	return cfg
}

// startClient runs a Client for p until the test ends (or stop), logging
// to the test and to an observer.
func startClient(t *testing.T, p Proxy, cfg Config) *testClient {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)).Core()))
	reg := prometheus.NewRegistry()
	c, err := New(cfg, p, reg, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testClient{Client: c, reg: reg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { tc.done <- c.Run(ctx) }()
	t.Cleanup(func() { tc.stop(t) })
	return tc
}

// stop cancels Run and waits for it to return: every goroutine it started
// has ended by then (Run waits for them).
func (tc *testClient) stop(t *testing.T) {
	t.Helper()
	tc.cancel()
	tc.once.Do(func() {
		select {
		case err := <-tc.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %v of cancel", waitTimeout)
		}
	})
}

// metric returns the value of one of the Client's metrics, read from the
// registry it was registered on: its first series, or with label and value
// given, the series that carries that label (0 if there is none yet).
func (tc *testClient) metric(t *testing.T, name string, labelValue ...string) float64 {
	t.Helper()
	mfs, err := tc.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(labelValue) == 2 && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == labelValue[0] && l.GetValue() == labelValue[1]
			}) {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
		if len(labelValue) == 2 {
			return 0
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// logged counts the log entries at level whose message contains msg.
func (tc *testClient) logged(level zapcore.Level, msg string) int {
	return tc.logs.Filter(func(e observer.LoggedEntry) bool {
		return e.Level == level && strings.Contains(e.Message, msg)
	}).Len()
}

// realProxy runs a proxy in front of two single-broker kfake clusters,
// "source" (active) and "target".
func realProxy(t *testing.T) *proxytest.Handle {
	t.Helper()
	return proxytest.Start(t, []*kafkatest.Cluster{
		kafkatest.NewFake(t, "source", 1),
		kafkatest.NewFake(t, "target", 1),
	})
}

// fakeProxy is a Proxy that records what it is asked, in order, with the
// gate in force when each switch ran. switchErrs are returned by the next
// switches, one each; block makes Switch wait for ctx.
type fakeProxy struct {
	mu         sync.Mutex
	active     string
	clusters   []string
	gate       proxy.Gate
	ops        []string
	switchErrs []error
	block      bool
	switchCtx  chan struct{} // closed when a blocking Switch is entered
	leases     []time.Time   // every ExtendHold, in order
}

func newFakeProxy(active string, clusters ...string) *fakeProxy {
	return &fakeProxy{active: active, clusters: clusters, switchCtx: make(chan struct{})}
}

func (f *fakeProxy) Status() proxy.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := proxy.Status{ActiveCluster: f.active, Gate: f.gate.Canonical()}
	for _, c := range f.clusters {
		st.Clusters = append(st.Clusters, proxy.ClusterStatus{Name: c})
	}
	return st
}

func (f *fakeProxy) Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error) {
	f.mu.Lock()
	f.ops = append(f.ops, fmt.Sprintf("switch %s under %s", cluster, gateString(f.gate)))
	block := f.block
	var err error
	if len(f.switchErrs) > 0 {
		err, f.switchErrs = f.switchErrs[0], f.switchErrs[1:]
	}
	from := f.active
	if err == nil && !block {
		f.active = cluster
	}
	f.mu.Unlock()
	if block {
		close(f.switchCtx)
		<-ctx.Done()
		return proxy.SwitchReport{}, fmt.Errorf("switch to %q abandoned: %w", cluster, ctx.Err())
	}
	if err != nil {
		return proxy.SwitchReport{}, err
	}
	return proxy.SwitchReport{From: from, To: cluster}, nil
}

func (f *fakeProxy) SetGate(g proxy.Gate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range g.APIKeys {
		if k == 18 { // ApiVersions: the real proxy refuses to gate it
			return fmt.Errorf("%w: API key 18", proxy.ErrInvalidGate)
		}
	}
	f.gate = g.Canonical()
	f.ops = append(f.ops, "set "+gateString(g))
	return nil
}

func (f *fakeProxy) ExtendHold(until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leases = append(f.leases, until)
}

func (f *fakeProxy) leasesSoFar() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leases)
}

func (f *fakeProxy) ClearGate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = proxy.Gate{}
	f.ops = append(f.ops, "clear")
}

func (f *fakeProxy) opsSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// gateString is "HOLD[0]", "HOLD[0]+REJECT[1]" (reject keys), "no gate";
// g in canonical form.
func gateString(g proxy.Gate) string {
	g = g.Canonical()
	if g.IsZero() {
		return "no gate"
	}
	s := fmt.Sprintf("%v%v", g.Mode, g.APIKeys)
	if len(g.RejectKeys) > 0 {
		s += fmt.Sprintf("+REJECT%v", g.RejectKeys)
	}
	return s
}

// desired builds a DesiredState; mode "" means no gate.
func desired(v uint64, active, mode string, keys ...int32) *switchyardv1.DesiredState {
	d := &switchyardv1.DesiredState{Version: v, ActiveCluster: active}
	if mode != "" {
		d.Gate = &switchyardv1.Gate{ApiKeys: keys, Mode: mode}
	}
	return d
}
