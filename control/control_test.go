package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// fakeMirror is a mirror whose progress the test sets.
type fakeMirror struct {
	mu          sync.Mutex
	ready       bool
	lag         int64
	caughtUp    bool
	synced      []string
	syncErr     error
	groupBehind string
	prepared    []string // groups PrepareGroups was asked for
	// beyond: how many more SyncGroups find the group's offset beyond what
	// the mirror has copied.
	beyond int
	// growing: topics a writer outside the cutover keeps writing on the
	// source; CaughtUp over them is never true.
	growing []string
	// onSource are topics created on the source that the mirror copies
	// from its next topic sync (RefreshTopics) on; refreshes counts them.
	onSource  []string
	copying   []string
	refreshes int
}

func (f *fakeMirror) Status() mirror.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := mirror.Status{Name: "m", Ready: f.ready, TopicErrors: map[string]string{},
		Partitions: []mirror.PartitionStatus{{Topic: "orders", Partition: 0, LagRecords: f.lag}}}
	for _, t := range f.copying {
		st.Partitions = append(st.Partitions, mirror.PartitionStatus{Topic: t, Partition: 0})
	}
	return st
}

func (f *fakeMirror) RefreshTopics(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	f.copying = append(f.copying, f.onSource...)
	f.onSource = nil
	return nil
}

func (f *fakeMirror) CaughtUp(_ context.Context, topics ...string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range topics {
		if t != "orders" && !slices.Contains(f.copying, t) {
			return false, t, fmt.Errorf("topic %s is not mirrored", t)
		}
	}
	if !f.caughtUp {
		return false, "orders/0", nil
	}
	for _, t := range topics {
		if slices.Contains(f.growing, t) {
			return false, t + "/0", nil
		}
	}
	return true, "", nil
}

func (f *fakeMirror) GroupsDrained(_ context.Context, groups []string, _ ...string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.groupBehind != "" {
		return false, f.groupBehind, nil
	}
	return true, "", nil
}

func (f *fakeMirror) GroupsJoined(context.Context, []string) (bool, string, error) {
	return true, "", nil
}

func (f *fakeMirror) PrepareGroups(_ context.Context, groups []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prepared = append(f.prepared, groups...)
	return nil
}

func (f *fakeMirror) SyncGroups(_ context.Context, groups []string) (mirror.GroupSyncReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.synced = append(f.synced, groups...)
	var rep mirror.GroupSyncReport
	for _, g := range groups {
		po := mirror.PartitionOffset{Topic: "orders", TargetTopic: "orders", Partition: 0, Source: 10, Target: 12, Previous: -1, Outcome: "committed"}
		if f.beyond > 0 {
			po.Target, po.Outcome = -1, "error"
			po.Err = fmt.Errorf("translate source offset 10: mirrored up to 9: %w", offsetmap.ErrBeyondMirrored)
		}
		rep.Groups = append(rep.Groups, mirror.GroupResult{Group: g, Partitions: []mirror.PartitionOffset{po}})
	}
	if f.beyond > 0 {
		f.beyond--
	}
	return rep, f.syncErr
}

// plane is a control plane served on loopback for a test.
type plane struct {
	t      *testing.T
	dir    string
	token  string
	mirror *fakeMirror
	ct     *Controller
	reg    *Registry
	addr   string
	conn   *grpc.ClientConn
	client switchyardv1.ControlServiceClient
	cancel context.CancelFunc
	done   chan error
}

var testClusters = []*switchyardv1.Cluster{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}, {Name: "target", Bootstrap: []string{"127.0.0.1:2"}}}

// startPlane runs a control plane on the store in dir (new when empty),
// on loopback with an operator token.
func startPlane(t *testing.T, dir string, fm *fakeMirror) *plane {
	t.Helper()
	return startPlaneConfig(t, dir, fm, ServerConfig{Listen: "127.0.0.1:0", Token: "s3cret"})
}

// startPlaneConfig is startPlane with the server configured by cfg; the
// plane's token is cfg.Token.
func startPlaneConfig(t *testing.T, dir string, fm *fakeMirror, cfg ServerConfig) *plane {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if fm == nil {
		fm = &fakeMirror{ready: true, caughtUp: true}
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(store, log)
	if err != nil {
		t.Fatal(err)
	}
	refs := []*MirrorRef{{Name: "m", Source: "source", Target: "target", Mirror: fm}}
	ct := NewController(reg, store, testClusters, refs, log)
	metricsReg := prometheus.NewRegistry()
	if err := ct.Instrument(metricsReg); err != nil {
		t.Fatal(err)
	}
	p := &plane{t: t, dir: dir, token: cfg.Token, mirror: fm, ct: ct, reg: reg, done: make(chan error, 1)}
	srv, err := NewServer(cfg, ct, reg, testClusters, refs, metricsReg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	if err := ct.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := srv.Serve(ctx, ln)
		ct.Wait()
		p.done <- err
	}()
	p.addr = ln.Addr().String()
	p.conn, err = grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.client = switchyardv1.NewControlServiceClient(p.conn)
	t.Cleanup(p.stop)
	return p
}

func (p *plane) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	p.conn.Close()
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Errorf("control plane: %v", err)
		}
	case <-time.After(10 * time.Second):
		p.t.Errorf("control plane did not stop")
	}
}

func (p *plane) authed() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+p.token)
}

// fakeSidecar speaks SidecarService like a proxy: it applies what it is
// told to a status of its own and acknowledges, unless told to stall.
type fakeSidecar struct {
	t        *testing.T
	app      string
	instance string

	mu       sync.Mutex
	active   string
	gate     *switchyardv1.Gate
	applied  uint64
	stall    bool
	inFlight int64
	// inFlightBy and usage are reported as they are (in_flight_by_api,
	// usage); stallTarget leaves desired states on the target unapplied
	// until it is cleared (then the next report applies the last one).
	inFlightBy  map[int32]int64
	usage       *switchyardv1.Usage
	stallTarget bool
	reports     int // status reports sent
	received    []*switchyardv1.DesiredState
	leases      []*switchyardv1.HoldLease

	cancel context.CancelFunc
	done   chan struct{}
}

// connectSidecar connects a fakeSidecar that announces no features (a
// sidecar from before them).
func connectSidecar(t *testing.T, p *plane, app, instance, active string) *fakeSidecar {
	t.Helper()
	return connectSidecarWith(t, p, app, instance, active, nil)
}

// connectSidecarWith connects a fakeSidecar that announces features.
func connectSidecarWith(t *testing.T, p *plane, app, instance, active string, features []switchyardv1.SidecarFeature) *fakeSidecar {
	t.Helper()
	s := &fakeSidecar{t: t, app: app, instance: instance, active: active, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+p.token))
	s.cancel = cancel
	stream, err := switchyardv1.NewSidecarServiceClient(p.conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := s.report()
	first.Identity = &switchyardv1.SidecarIdentity{App: app, Instance: instance, Labels: map[string]string{"role": "producer"}}
	first.Clusters = []string{"source", "target"}
	first.Features = features
	if err := stream.Send(first); err != nil {
		t.Fatal(err)
	}
	var sendMu sync.Mutex
	send := func(m *switchyardv1.ConnectRequest) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if stream.Send(m) == nil { // the stream ending shows in Recv
			s.mu.Lock()
			s.reports++
			s.mu.Unlock()
		}
	}
	go func() { // periodic reports, as a proxy sends them
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				send(s.report())
			}
		}
	}()
	go func() {
		defer close(s.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if l := m.GetHoldLease(); l != nil {
				s.mu.Lock()
				s.leases = append(s.leases, l)
				s.mu.Unlock()
			}
			d := m.GetDesired()
			if d == nil {
				continue
			}
			s.mu.Lock()
			s.received = append(s.received, d)
			s.applyLocked(d)
			s.mu.Unlock()
			send(s.report())
		}
	}()
	t.Cleanup(s.close)
	return s
}

// applyLocked applies d unless told to stall.
func (s *fakeSidecar) applyLocked(d *switchyardv1.DesiredState) {
	if s.stall || d.GetVersion() <= s.applied || (s.stallTarget && d.GetActiveCluster() == "target") {
		return
	}
	if d.GetActiveCluster() != "" {
		s.active = d.GetActiveCluster()
	}
	s.gate = d.GetGate()
	s.applied = d.GetVersion()
}

func (s *fakeSidecar) report() *switchyardv1.ConnectRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.received); n > 0 && !s.stallTarget {
		s.applyLocked(s.received[n-1]) // what a stall left unapplied
	}
	st := &switchyardv1.ProxyStatus{ActiveCluster: s.active, Gate: s.gate, Usage: s.usage}
	if s.inFlight > 0 {
		st.InFlightByApi = map[int32]int64{0: s.inFlight}
	}
	for k, n := range s.inFlightBy {
		if st.InFlightByApi == nil {
			st.InFlightByApi = map[int32]int64{}
		}
		st.InFlightByApi[k] = n
	}
	return &switchyardv1.ConnectRequest{AppliedVersion: s.applied, Status: st}
}

func (s *fakeSidecar) close() {
	s.cancel()
	<-s.done
}

func (s *fakeSidecar) state() (string, *switchyardv1.Gate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active, s.gate
}

// waitCutover waits until the cutover reaches one of the steps.
func (p *plane) waitCutover(id string, steps ...switchyardv1.CutoverStep) *switchyardv1.Cutover {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, ok := p.ct.Get(id)
		if ok {
			for _, s := range steps {
				if c.GetStep() == s {
					return c
				}
			}
			if terminal(c.GetStep()) {
				p.t.Fatalf("cutover ended %s (%s), want %v", StepName(c.GetStep()), c.GetError(), steps)
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("cutover %s: still %s after 30s, want %v", id, StepName(c.GetStep()), steps)
		}
		select {
		case <-p.ct.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *plane) waitSidecars(n int) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.reg.Select(&switchyardv1.SidecarSelector{Apps: []string{"orders"}})) < n {
		if time.Now().After(deadline) {
			p.t.Fatalf("fewer than %d sidecars connected", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spec() *switchyardv1.CutoverSpec {
	return &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}},
		Source:   "source", Target: "target", Topics: []string{"orders"}, Groups: []string{"billing"},
		Policy: &switchyardv1.CutoverPolicy{AckTimeout: durationpb.New(2 * time.Second), DrainTimeout: durationpb.New(2 * time.Second)},
	}
}

func steps(c *switchyardv1.Cutover) string {
	var out []string
	for _, h := range c.GetHistory() {
		out = append(out, StepName(h.GetStep()))
	}
	return strings.Join(out, " ")
}

func TestCutoverMovesSidecarsToTarget(t *testing.T) {
	p := startPlane(t, "", nil)
	a := connectSidecar(t, p, "orders", "a", "source")
	b := connectSidecar(t, p, "orders", "b", "source")
	other := connectSidecar(t, p, "billing", "x", "source")
	p.waitSidecars(2)

	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	if got, want := steps(c), "preflight gate drain sync-groups flip release verify done"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	for _, s := range []*fakeSidecar{a, b} {
		active, gate := s.state()
		if active != "target" || gate != nil {
			t.Errorf("sidecar %s: on %q with gate %v, want target ungated", s.instance, active, gate)
		}
		// What it was told, in order: gated on the source, gated on the
		// target, released on the target.
		s.mu.Lock()
		var seq []string
		for _, d := range s.received {
			seq = append(seq, fmt.Sprintf("%s/%v", d.GetActiveCluster(), d.GetGate().GetApiKeys()))
			// The HOLD gate carries the cutover's hold budget; the flip's
			// REJECT gate none.
			if g := d.GetGate(); g != nil {
				want := time.Duration(0)
				if g.GetMode() == "HOLD" {
					want = c.GetSpec().GetPolicy().GetHoldBudget().AsDuration()
				}
				if got := g.GetHoldBudget().AsDuration(); got != want || want < 0 {
					t.Errorf("sidecar %s: %s gate with hold budget %v, want %v", s.instance, g.GetMode(), got, want)
				}
			}
		}
		s.mu.Unlock()
		// (First the empty state of a sidecar no rule covers yet.)
		if got := strings.Join(seq, " "); got != "/[] source/[0] target/[0 1] target/[1] target/[]" {
			t.Errorf("sidecar %s received %s", s.instance, got)
		}
	}
	if active, _ := other.state(); active != "source" {
		t.Errorf("a sidecar of another application moved to %s", active)
	}
	if c.GetBlockWindow() == nil || c.GetBlockWindow().AsDuration() <= 0 || c.GetGatedAt() == nil || c.GetReleasedAt() == nil {
		t.Errorf("block window not measured: gated %v released %v window %v", c.GetGatedAt(), c.GetReleasedAt(), c.GetBlockWindow())
	}
	if len(c.GetGroupOffsets()) != 1 || c.GetGroupOffsets()[0].GetTarget() != 12 {
		t.Errorf("group offsets %v", c.GetGroupOffsets())
	}
	if c.GetSpec().GetPolicy().GetGateMode() != "HOLD" || c.GetSpec().GetMirror() != "m" {
		t.Errorf("defaults not filled in: %v", c.GetSpec())
	}
	// The metrics say it too.
	resp2, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	for _, want := range []string{`switchyard_control_cutovers_total{outcome="done"} 1`, `switchyard_control_sidecars{app="orders",state="connected"} 2`,
		`switchyard_control_block_window_seconds_count 1`, `switchyard_control_step_duration_seconds_count{step="drain"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// A sidecar of the application that connects afterwards goes to the
	// target at once.
	late := connectSidecar(t, p, "orders", "late", "source")
	deadline := time.Now().Add(5 * time.Second)
	for active, _ := late.state(); active != "target"; active, _ = late.state() {
		if time.Now().After(deadline) {
			t.Fatal("a sidecar connecting after the cutover was not moved to the target")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCutoverRollsBackWhenASidecarDoesNotAcknowledge(t *testing.T) {
	p := startPlane(t, "", nil)
	a := connectSidecar(t, p, "orders", "a", "source")
	b := connectSidecar(t, p, "orders", "b", "source")
	p.waitSidecars(2)
	b.mu.Lock()
	b.stall = true
	b.mu.Unlock()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK)
	b.mu.Lock()
	b.stall = false // it acknowledges the rollback
	b.mu.Unlock()
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
	if got := steps(c); got != "preflight gate rolling-back rolled-back" {
		t.Errorf("steps %q", got)
	}
	if !strings.Contains(c.GetError(), "orders/b") {
		t.Errorf("error %q does not name the sidecar that did not acknowledge", c.GetError())
	}
	for _, s := range []*fakeSidecar{a, b} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			active, gate := s.state()
			if active == "source" && gate == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sidecar %s: on %s gate %v after the rollback", s.instance, active, gate)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestCutoverWaitsForDrainAndAborts(t *testing.T) {
	fm := &fakeMirror{ready: true, caughtUp: false}
	p := startPlane(t, "", fm)
	a := connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	sp := spec()
	sp.Policy.DrainTimeout = durationpb.New(time.Minute)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN)
	if _, gate := a.state(); gate == nil || gate.GetMode() != "HOLD" {
		t.Fatalf("in drain, the sidecar's gate is %v", gate)
	}
	// The mirror never catches up: an operator aborts.
	if _, err := p.client.AbortCutover(context.Background(), &switchyardv1.AbortCutoverRequest{Id: id}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("abort without a token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := p.client.AbortCutover(p.authed(), &switchyardv1.AbortCutoverRequest{Id: id, Reason: "mirror stuck"}); err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
	if c.GetError() != "mirror stuck" || !c.GetAbortRequested() {
		t.Errorf("error %q, abort requested %v", c.GetError(), c.GetAbortRequested())
	}
	if active, gate := a.state(); active != "source" || gate != nil {
		t.Errorf("after the abort: on %s with gate %v", active, gate)
	}
	if _, err := p.client.AbortCutover(p.authed(), &switchyardv1.AbortCutoverRequest{Id: id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("abort of an ended cutover: %v, want FAILED_PRECONDITION", err)
	}
}

func TestCutoverDrainWaitsForInFlightProduce(t *testing.T) {
	p := startPlane(t, "", nil)
	a := connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	a.mu.Lock()
	a.inFlight = 3
	a.mu.Unlock()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN)
	// While produce is in flight the cutover stays in drain, however many
	// reports the sidecar sends.
	a.mu.Lock()
	from := a.reports
	a.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		n := a.reports - from
		a.mu.Unlock()
		if n >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d status reports in 10 s", n)
		}
		select {
		case <-p.reg.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if c, _ := p.ct.Get(id); c.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN {
		t.Fatalf("left drain with produce in flight: %s", StepName(c.GetStep()))
	}
	a.mu.Lock()
	a.inFlight = 0
	a.mu.Unlock()
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
}

func TestCreateCutoverRejectsBadSpecs(t *testing.T) {
	fm := &fakeMirror{ready: true, caughtUp: true, lag: 50000}
	p := startPlane(t, "", fm)
	connectSidecar(t, p, "orders", "a", "elsewhere")
	p.waitSidecars(1)
	for name, c := range map[string]struct {
		mutate func(*switchyardv1.CutoverSpec)
		code   codes.Code
	}{
		"no apps":         {func(s *switchyardv1.CutoverSpec) { s.Selector.Apps = nil }, codes.InvalidArgument},
		"same cluster":    {func(s *switchyardv1.CutoverSpec) { s.Target = "source" }, codes.InvalidArgument},
		"unknown cluster": {func(s *switchyardv1.CutoverSpec) { s.Target = "nowhere" }, codes.FailedPrecondition},
		"unknown mirror":  {func(s *switchyardv1.CutoverSpec) { s.Mirror = "other" }, codes.FailedPrecondition},
		"bad mode":        {func(s *switchyardv1.CutoverSpec) { s.Policy.GateMode = "DROP" }, codes.InvalidArgument},
		"no sidecars":     {func(s *switchyardv1.CutoverSpec) { s.Selector.Apps = []string{"ghost"} }, codes.FailedPrecondition},
	} {
		sp := spec()
		c.mutate(sp)
		if _, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp}); status.Code(err) != c.code {
			t.Errorf("%s: %v, want %s", name, err, c.code)
		}
	}
	// Preflight refuses: the sidecar is not on the source, and the mirror
	// lags more than allowed. Nothing was gated, so nothing is undone.
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
	if !strings.Contains(c.GetError(), `runs on cluster "elsewhere"`) || steps(c) != "preflight rolling-back rolled-back" {
		t.Errorf("preflight: %q after %s", c.GetError(), steps(c))
	}
}

func TestAuthOverGRPCAndREST(t *testing.T) {
	p := startPlane(t, "", nil)
	ctx := context.Background()
	if _, err := p.client.ListCutovers(ctx, &switchyardv1.ListCutoversRequest{}); err != nil {
		t.Errorf("reads are open by default: %v", err)
	}
	for name, c := range map[string]context.Context{
		"no token":    ctx,
		"wrong token": metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer nope"),
		"not bearer":  metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+p.token),
	} {
		if _, err := p.client.CreateCutover(c, &switchyardv1.CreateCutoverRequest{Spec: spec()}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC create, %s: %v, want UNAUTHENTICATED", name, err)
		}
	}
	// A sidecar without the token is refused too.
	stream, err := switchyardv1.NewSidecarServiceClient(p.conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&switchyardv1.ConnectRequest{Identity: &switchyardv1.SidecarIdentity{App: "x", Instance: "y"}})
	if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("sidecar stream without a token: %v, want UNAUTHENTICATED", err)
	}

	body := `{"selector":{"apps":["orders"]},"source":"source","target":"target"}`
	for name, c := range map[string]struct {
		auth string
		want int
	}{"no token": {"", 401}, "wrong token": {"Bearer nope", 401}, "right token, no sidecars": {"Bearer " + p.token, 400}} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/v1/cutovers", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("REST create, %s: %d %s, want %d", name, resp.StatusCode, b, c.want)
		}
	}
	for _, path := range []string{"/v1/cutovers", "/v1/sidecars", "/v1/clusters", "/v1/mirrors", "/v1/openapi.json"} {
		resp, err := http.Get("http://" + p.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
}

func TestRESTWatchStreamsUntilDone(t *testing.T) {
	p := startPlane(t, "", nil)
	connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.Get("http://" + p.addr + "/v1/cutovers/" + resp.GetCutover().GetId() + ":watch")
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	b, err := io.ReadAll(hr.Body) // ends when the cutover does
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 3 || !strings.Contains(lines[len(lines)-1], `"CUTOVER_STEP_DONE"`) || !strings.HasPrefix(lines[0], `{"result":`) {
		t.Errorf("watch gave %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	// gRPC watch of an ended cutover: its final state, then the end.
	ws, err := p.client.WatchCutover(context.Background(), &switchyardv1.WatchCutoverRequest{Id: resp.GetCutover().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ws.Recv()
	if err != nil || m.GetCutover().GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		t.Fatalf("watch: %v %v", m, err)
	}
	if _, err := ws.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("watch did not end: %v", err)
	}
}

// TestRestartRollsBackOrResumes stops the control plane while a cutover is
// in flip (it rolls back at the next start) and while one is in release
// (it goes on to done).
func TestRestartRollsBackOrResumes(t *testing.T) {
	for _, c := range []struct {
		at   switchyardv1.CutoverStep
		want switchyardv1.CutoverStep
		side string // where the sidecar ends
	}{
		{switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, "source"},
		{switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_DONE, "target"},
	} {
		t.Run(StepName(c.at), func(t *testing.T) {
			dir := t.TempDir()
			p := startPlane(t, dir, nil)
			a := connectSidecar(t, p, "orders", "a", "source")
			p.waitSidecars(1)
			resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetCutover().GetId()
			p.waitCutover(id, c.at, switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
			p.stop()
			a.close()

			stored, err := OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			// Put the stored cutover back at the step under test, as if the
			// plane had been killed right after storing it.
			ms, err := stored.List("cutovers", func() proto.Message { return &switchyardv1.Cutover{} })
			if err != nil || len(ms) != 1 {
				t.Fatalf("stored cutovers: %v %v", ms, err)
			}
			co := ms[0].(*switchyardv1.Cutover)
			co.Step = c.at
			co.History = co.History[:int(c.at)]
			co.History[len(co.History)-1].Finished = nil
			if err := stored.Put("cutovers", id, co); err != nil {
				t.Fatal(err)
			}

			p2 := startPlane(t, dir, nil)
			a2 := connectSidecar(t, p2, "orders", "a", "target")
			got := p2.waitCutover(id, c.want)
			if c.want == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK && !strings.Contains(got.GetError(), "restarted during flip") {
				t.Errorf("error %q", got.GetError())
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				active, gate := a2.state()
				if active == c.side && gate == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("sidecar on %s gate %v, want %s ungated", active, gate, c.side)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestRegistryKeepsDivergedSidecarsAfterLosingItsStore: a control plane
// whose store was lost meets a sidecar that applied version 9, on the
// target and gated. It adopts nothing: the sidecar is sent the registry's
// state (none), keeps what it runs and is counted as diverged. The
// operator declares the application on the target: the sidecar gets that
// state above version 9 (its gate lifted), and a sidecar that starts later
// is put there too.
func TestRegistryKeepsDivergedSidecarsAfterLosingItsStore(t *testing.T) {
	p := startPlane(t, "", nil)
	first := &switchyardv1.ConnectRequest{Identity: &switchyardv1.SidecarIdentity{App: "orders", Instance: "a"},
		AppliedVersion: 9, Status: &switchyardv1.ProxyStatus{ActiveCluster: "target", Gate: &switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "HOLD"}}}
	stream, m, err := openStream(t, p.conn, p.token, first)
	if err != nil {
		t.Fatal(err)
	}
	if d := m.GetDesired(); d.GetVersion() != 0 || d.GetActiveCluster() != "" || d.GetGate() != nil {
		t.Errorf("desired %v, want none (the registry has no rule for orders)", d)
	}
	if got := p.reg.counts()[[2]string{"orders", "diverged"}]; got != 1 {
		t.Errorf("diverged sidecars of orders: %d, want 1 (%v)", got, p.reg.counts())
	}

	sel := &switchyardv1.SidecarSelector{Apps: []string{"orders"}}
	_, err = p.client.DeclareState(p.authed(), &switchyardv1.DeclareStateRequest{Selector: sel, ActiveCluster: "source"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `sidecar orders/a runs on cluster "target", not "source"`) {
		t.Errorf("declaring orders on source while it runs on target: %v, want FailedPrecondition naming orders/a", err)
	}
	resp, err := p.client.DeclareState(p.authed(), &switchyardv1.DeclareStateRequest{Selector: sel, ActiveCluster: "target"})
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVersion()
	if v <= 9 || len(resp.GetSidecars()) != 1 || resp.GetSidecars()[0] != "orders/a" {
		t.Fatalf("declared %v: want a version above the sidecar's 9, covering orders/a", resp)
	}
	m, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if d := m.GetDesired(); d.GetVersion() != v || d.GetActiveCluster() != "target" || d.GetGate() != nil {
		t.Errorf("desired %v, want version %d on target, no gate", d, v)
	}
	late := connectSidecar(t, p, "orders", "b", "source")
	deadline := time.Now().Add(10 * time.Second)
	for active, _ := late.state(); active != "target"; active, _ = late.state() {
		if time.Now().After(deadline) {
			t.Fatalf("a sidecar started after the declaration runs on %s, want target", active)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeclareStateRefusals: a declaration needs applications and a known
// cluster, and waits for a running cutover of the same applications.
func TestDeclareStateRefusals(t *testing.T) {
	p := startPlane(t, "", &fakeMirror{ready: true, caughtUp: false})
	connectSidecar(t, p, "orders", "a", "source")
	p.waitConnected("orders", "a")
	for _, tc := range []struct {
		name string
		req  *switchyardv1.DeclareStateRequest
		want codes.Code
	}{
		{"no apps", &switchyardv1.DeclareStateRequest{Selector: &switchyardv1.SidecarSelector{}, ActiveCluster: "source"}, codes.InvalidArgument},
		{"no cluster", &switchyardv1.DeclareStateRequest{Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}}}, codes.InvalidArgument},
		{"unknown cluster", &switchyardv1.DeclareStateRequest{Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}}, ActiveCluster: "elsewhere"},
			codes.FailedPrecondition},
	} {
		if _, err := p.client.DeclareState(p.authed(), tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := p.client.DeclareState(context.Background(), &switchyardv1.DeclareStateRequest{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}}, ActiveCluster: "source"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a token: %v, want Unauthenticated", err)
	}

	// The mirror never catches up: the cutover waits in drain.
	sp := spec()
	sp.Policy.DrainTimeout = durationpb.New(time.Minute)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN)
	_, err = p.client.DeclareState(p.authed(), &switchyardv1.DeclareStateRequest{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"billing", "orders"}}, ActiveCluster: "source"})
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), id) {
		t.Errorf("during a cutover of orders: %v, want Aborted naming %s", err, id)
	}
	if _, err := p.client.AbortCutover(p.authed(), &switchyardv1.AbortCutoverRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
	if _, err := p.client.DeclareState(p.authed(), &switchyardv1.DeclareStateRequest{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders"}}, ActiveCluster: "source"}); err != nil {
		t.Errorf("after the cutover rolled back: %v", err)
	}
}

// TestRegistryForgetsGoneSidecars: a sidecar whose stream ended is listed
// as disconnected, then forgotten (a pod replaced in a rollout).
func TestRegistryForgetsGoneSidecars(t *testing.T) {
	p := startPlane(t, "", nil)
	p.reg.mu.Lock()
	p.reg.forgetAfter = 200 * time.Millisecond
	p.reg.mu.Unlock()
	s := connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	s.close()
	deadline := time.Now().Add(10 * time.Second)
	sawDisconnected := false
	for {
		list := p.reg.List("orders")
		if len(list) == 1 && !list[0].GetConnected() {
			sawDisconnected = true
		}
		if len(list) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a sidecar gone for long is still listed: %v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawDisconnected {
		t.Error("the sidecar was never listed as disconnected before being forgotten")
	}
}

// TestStopDoesNotWaitForStreams: a control plane with a sidecar stream and
// a watch open stops at once, not after its graceful-stop timeout.
func TestStopDoesNotWaitForStreams(t *testing.T) {
	p := startPlane(t, "", nil)
	connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	start := time.Now()
	p.stop()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stopping took %v with a sidecar connected", took)
	}
}

// TestPreflightRefreshesTopicsCreatedSinceTheLastSync: a cutover naming a
// topic created on the source after the mirror's last topic sync (Kafka
// Streams creates its internal topics at start) is not refused: preflight
// asks the mirror to sync now, and goes on once it copies the topic. A
// topic the source does not have is still refused, naming it.
func TestPreflightRefreshesTopicsCreatedSinceTheLastSync(t *testing.T) {
	fm := &fakeMirror{ready: true, caughtUp: true, onSource: []string{"orders-repartition"}}
	p := startPlane(t, "", fm)
	connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	s := spec()
	s.Topics = []string{"orders", "orders-repartition"}
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	fm.mu.Lock()
	refreshes := fm.refreshes
	fm.mu.Unlock()
	if refreshes != 1 {
		t.Errorf("%d topic refreshes, want 1", refreshes)
	}

	p = startPlane(t, "", &fakeMirror{ready: true, caughtUp: true})
	connectSidecar(t, p, "orders", "a", "source")
	p.waitSidecars(1)
	s = spec()
	s.Topics = []string{"orders", "orders-changelog"} // nobody created it
	resp, err = p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	c := p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK)
	if !strings.Contains(c.GetError(), "does not copy topics [orders-changelog] (not on the source, or not selected") {
		t.Errorf("error %q does not name the missing topic", c.GetError())
	}
}
