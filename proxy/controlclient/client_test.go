package controlclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zapcore"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

// The proxy core must keep satisfying the interface this package declares.
var _ Proxy = (*proxy.Proxy)(nil)

// TestFirstMessageAnnouncesTheSidecar: the first message of a stream says
// who the sidecar is, which clusters it has and where it is, carries the
// bearer token, and acknowledges nothing yet; later messages leave the
// identity out.
func TestFirstMessageAnnouncesTheSidecar(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	cfg := testConfig(fc.addr)
	cfg.Token = "s3cret"
	cfg.Labels = map[string]string{"role": "producer", "team": "payments"}
	tc := startClient(t, p, cfg)

	first := fc.waitRequest(t, "the first message", 0, func(received) bool { return true })
	if !first.first || first.stream != 1 {
		t.Fatalf("first message recorded as %+v", first)
	}
	id := first.req.GetIdentity()
	if id.GetApp() != "orders" || id.GetInstance() != "orders-0" || !maps.Equal(id.GetLabels(), cfg.Labels) {
		t.Errorf("identity = %v, want orders/orders-0 %v", id, cfg.Labels)
	}
	if got := first.req.GetClusters(); !slices.Equal(got, []string{"source", "target"}) {
		t.Errorf("clusters = %v, want [source target]", got)
	}
	if got := first.req.GetFeatures(); !slices.Equal(got, Features) || len(got) != 3 {
		t.Errorf("features = %v, want %v", got, Features)
	}
	if v, e := first.req.GetAppliedVersion(), first.req.GetApplyError(); v != 0 || e != "" {
		t.Errorf("applied_version %d, apply_error %q; want 0 and none", v, e)
	}
	if st := first.req.GetStatus(); st.GetActiveCluster() != "source" || st.GetClusterId() != p.ClusterID() || len(st.GetClusters()) != 2 {
		t.Errorf("status = %v, want the proxy's (active source, cluster id %s)", st, p.ClusterID())
	}
	fc.mu.Lock()
	auth := slices.Clone(fc.auth)
	fc.mu.Unlock()
	if !slices.Equal(auth, []string{"Bearer s3cret"}) {
		t.Errorf("authorization metadata = %q, want [Bearer s3cret]", auth)
	}
	// Not "connected" before the control plane has answered.
	if got := tc.metric(t, "switchyard_sidecar_control_connected"); got != 0 {
		t.Errorf("connected = %v before any response, want 0", got)
	}

	mark := fc.mark()
	fc.send(t, &switchyardv1.DesiredState{}) // version 0: nothing for this sidecar
	next := fc.ack(t, mark, 0)
	if next.GetIdentity() != nil || next.GetClusters() != nil || next.GetFeatures() != nil {
		t.Errorf("a later message repeats identity %v / clusters %v / features %v", next.GetIdentity(), next.GetClusters(), next.GetFeatures())
	}
	waitFor(t, "connected = 1", func() bool { return tc.metric(t, "switchyard_sidecar_control_connected") == 1 })
}

// TestAppliesDesiredStatesInOrder: a cutover as the control plane sends it
// — gate, then switch under the gate, then release — is applied to a real
// proxy step by step, each version acknowledged with a status that shows it.
func TestAppliesDesiredStatesInOrder(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, p, testConfig(fc.addr))

	steps := []struct {
		name    string
		desired *switchyardv1.DesiredState
		active  string
		gate    proxy.Gate
	}{
		{"gate", desired(1, "source", "HOLD", 0), "source", proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold}},
		{"flip", desired(2, "target", "HOLD", 0), "target", proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold}},
		{"release", desired(3, "target", ""), "target", proxy.Gate{}},
	}
	for _, s := range steps {
		mark := fc.mark()
		fc.send(t, s.desired)
		ack := fc.ack(t, mark, s.desired.GetVersion())
		st := p.Status()
		if st.ActiveCluster != s.active || !sameGate(st.Gate, s.gate) {
			t.Fatalf("%s: proxy on %s with %s, want %s with %s", s.name, st.ActiveCluster, gateString(st.Gate), s.active, gateString(s.gate))
		}
		if got := ack.GetStatus(); got.GetActiveCluster() != s.active || !gateEqualProto(got.GetGate(), s.desired.GetGate()) {
			t.Errorf("%s: acknowledgement's status shows %s with %v, want %s with %v", s.name, got.GetActiveCluster(), got.GetGate(), s.active, s.desired.GetGate())
		}
	}
	if st := p.Status(); st.Switches != 1 {
		t.Errorf("switches = %d, want 1", st.Switches)
	}
	for name, want := range map[string]float64{
		"switchyard_sidecar_control_connected":  1,
		"switchyard_sidecar_desired_version":    3,
		"switchyard_sidecar_applied_version":    3,
		"switchyard_sidecar_apply_errors_total": 0,
	} {
		if got := tc.metric(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if s := tc.State(); s.AppliedVersion != 3 || s.ApplyError != "" {
		t.Errorf("State() = %+v", s)
	}
}

func gateEqualProto(a, b *switchyardv1.Gate) bool {
	return slices.Equal(a.GetApiKeys(), b.GetApiKeys()) && a.GetMode() == b.GetMode()
}

// TestUnknownClusterIsReportedNotAcknowledged: a desired state naming a
// cluster the proxy lacks changes nothing, is reported with the error and
// leaves the applied version where it was; the next good one applies.
func TestUnknownClusterIsReportedNotAcknowledged(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, p, testConfig(fc.addr))

	mark := fc.mark()
	fc.send(t, desired(1, "source", "REJECT", 0))
	fc.ack(t, mark, 1)

	mark = fc.mark()
	fc.send(t, desired(2, "nowhere", ""))
	r := fc.waitRequest(t, "a report of the failed version 2", mark, func(r received) bool { return r.req.GetApplyError() != "" })
	if r.req.GetAppliedVersion() != 1 {
		t.Errorf("applied_version = %d after a failed version 2, want 1", r.req.GetAppliedVersion())
	}
	for _, w := range []string{`"nowhere"`, proxy.ErrUnknownCluster.Error(), "source, target"} {
		if !strings.Contains(r.req.GetApplyError(), w) {
			t.Errorf("apply_error %q does not mention %s", r.req.GetApplyError(), w)
		}
	}
	if st := p.Status(); st.ActiveCluster != "source" || st.Gate.Mode != proxy.GateReject {
		t.Errorf("proxy changed by a refused state: on %s with %s", st.ActiveCluster, gateString(st.Gate))
	}
	if got := tc.metric(t, "switchyard_sidecar_apply_errors_total"); got != 1 {
		t.Errorf("apply errors = %v, want 1", got)
	}
	if got := tc.metric(t, "switchyard_sidecar_applied_version"); got != 1 {
		t.Errorf("applied version metric = %v, want 1", got)
	}

	mark = fc.mark()
	fc.send(t, desired(3, "target", ""))
	fc.ack(t, mark, 3) // no apply_error any more
	if st := p.Status(); st.ActiveCluster != "target" || len(st.Gate.APIKeys) != 0 {
		t.Errorf("after version 3: on %s with %s, want target with no gate", st.ActiveCluster, gateString(st.Gate))
	}
	// Not retried: an unknown cluster stays unknown.
	if got := tc.metric(t, "switchyard_sidecar_apply_errors_total"); got != 1 {
		t.Errorf("apply errors = %v after the good version, want still 1", got)
	}
}

// TestVersionsAtOrBelowTheAppliedOneAreNotReapplied: the same version again
// (as a control plane sends its state on every new stream) is acknowledged
// without touching the proxy, even if the proxy drifted since; an older
// version, or the same version with other content, is refused and
// reported.
func TestVersionsAtOrBelowTheAppliedOneAreNotReapplied(t *testing.T) {
	fp := newFakeProxy("source", "source", "target")
	fc := startFake(t, "127.0.0.1:0")
	startClient(t, fp, testConfig(fc.addr))

	mark := fc.mark()
	fc.send(t, desired(2, "target", "HOLD", 0))
	fc.ack(t, mark, 2)
	applied := []string{"set HOLD[0]", "switch target under HOLD[0]"}
	if got := fp.opsSoFar(); !slices.Equal(got, applied) {
		t.Fatalf("ops = %q, want %q", got, applied)
	}
	fp.ClearGate() // an operator, through the admin API
	applied = append(applied, "clear")

	tests := []struct {
		name    string
		desired *switchyardv1.DesiredState
		wantErr string // "" : acknowledged
	}{
		{"same version again", desired(2, "target", "HOLD", 0), ""},
		{"older version", desired(1, "source", ""), "older than the applied version 2"},
		{"same version, other content", desired(2, "source", ""), "differs from the state applied"},
		{"version 0 after an apply", &switchyardv1.DesiredState{}, "older than the applied version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mark := fc.mark()
			fc.send(t, tt.desired)
			r := fc.waitRequest(t, "the report", mark, func(received) bool { return true })
			if r.req.GetAppliedVersion() != 2 {
				t.Errorf("applied_version = %d, want 2", r.req.GetAppliedVersion())
			}
			if tt.wantErr == "" && r.req.GetApplyError() != "" || !strings.Contains(r.req.GetApplyError(), tt.wantErr) {
				t.Errorf("apply_error = %q, want %q", r.req.GetApplyError(), tt.wantErr)
			}
			if got := fp.opsSoFar(); !slices.Equal(got, applied) {
				t.Errorf("ops = %q, want %q (nothing reapplied)", got, applied)
			}
		})
	}

	mark = fc.mark()
	fc.send(t, desired(3, "source", ""))
	fc.ack(t, mark, 3)
	want := append(applied, "switch source under no gate")
	if got := fp.opsSoFar(); !slices.Equal(got, want) {
		t.Errorf("ops = %q, want %q", got, want)
	}
}

// TestReconnectKeepsStateAndReannounces: when the control plane goes away
// the proxy keeps what it applied, the outage is logged once however many
// attempts fail, and a control plane back on the same address hears the
// identity and the applied version again; re-sending that version changes
// nothing, a newer one applies.
func TestReconnectKeepsStateAndReannounces(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, p, testConfig(fc.addr))

	mark := fc.mark()
	fc.send(t, desired(1, "target", "REJECT", 0))
	fc.ack(t, mark, 1)

	fc.stop()
	waitFor(t, "connected = 0", func() bool { return tc.metric(t, "switchyard_sidecar_control_connected") == 0 })
	waitFor(t, "several failed reconnects", func() bool { return tc.logged(zapcore.DebugLevel, "reconnect failed") >= 3 })
	if n := tc.logged(zapcore.WarnLevel, "control plane"); n != 1 {
		t.Errorf("%d warnings during one outage, want 1: %v", n, tc.logs.FilterLevelExact(zapcore.WarnLevel).All())
	}
	if st := p.Status(); st.ActiveCluster != "target" || st.Gate.Mode != proxy.GateReject {
		t.Errorf("during the outage: on %s with %s, want target with REJECT[0]", st.ActiveCluster, gateString(st.Gate))
	}

	fc2 := startFake(t, fc.addr)
	first := fc2.waitRequest(t, "the first message to the new control plane", 0, func(received) bool { return true })
	if !first.first || first.req.GetIdentity().GetApp() != "orders" || first.req.GetIdentity().GetInstance() != "orders-0" {
		t.Errorf("first message after reconnect: %v", first.req)
	}
	if first.req.GetAppliedVersion() != 1 || !slices.Equal(first.req.GetClusters(), []string{"source", "target"}) {
		t.Errorf("first message after reconnect: applied_version %d, clusters %v; want 1, [source target]",
			first.req.GetAppliedVersion(), first.req.GetClusters())
	}

	mark = fc2.mark()
	fc2.send(t, desired(1, "target", "REJECT", 0))
	fc2.ack(t, mark, 1)
	waitFor(t, "connected = 1", func() bool { return tc.metric(t, "switchyard_sidecar_control_connected") == 1 })
	if n := tc.logged(zapcore.InfoLevel, "reconnected"); n != 1 {
		t.Errorf("%d reconnected logs, want 1", n)
	}
	if st := p.Status(); st.Switches != 1 {
		t.Errorf("switches = %d after the same version again, want 1", st.Switches)
	}

	mark = fc2.mark()
	fc2.send(t, desired(2, "source", ""))
	fc2.ack(t, mark, 2)
	if st := p.Status(); st.ActiveCluster != "source" || len(st.Gate.APIKeys) != 0 || st.Switches != 2 {
		t.Errorf("after version 2: on %s with %s after %d switches", st.ActiveCluster, gateString(st.Gate), st.Switches)
	}
}

// TestStatusIsReportedPeriodically: with nothing to apply, the status still
// arrives every StatusInterval, and shows changes made behind the control
// plane's back.
func TestStatusIsReportedPeriodically(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	cfg := testConfig(fc.addr)
	cfg.StatusInterval = 10 * time.Millisecond
	startClient(t, p, cfg)

	waitFor(t, "five reports", func() bool { return fc.mark() >= 5 })
	mark := fc.mark()
	if err := p.SetGate(proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold}); err != nil {
		t.Fatal(err)
	}
	r := fc.waitRequest(t, "a report showing the gate", mark, func(r received) bool { return r.req.GetStatus().GetGate() != nil })
	if r.first || r.stream != 1 {
		t.Errorf("the report came as %+v, want a later message on the first stream", r)
	}
}

// TestUsageIsReported: what the proxy's clients do reaches the control
// plane in the sidecar's reports (ProxyStatus.usage): nothing before any
// traffic, then the topic a client produced to.
func TestUsageIsReported(t *testing.T) {
	p := realProxy(t)
	fc := startFake(t, "127.0.0.1:0")
	cfg := testConfig(fc.addr)
	cfg.StatusInterval = 10 * time.Millisecond
	startClient(t, p, cfg)

	first := fc.waitRequest(t, "the first report", 0, func(r received) bool { return r.first })
	if u := first.req.GetStatus().GetUsage(); u != nil {
		t.Fatalf("usage in the first report, before any traffic: %v", u)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr().String()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "reported", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	r := fc.waitRequest(t, "a report with the topic produced", fc.mark(), func(r received) bool {
		for _, tu := range r.req.GetStatus().GetUsage().GetTopics() {
			if tu.GetTopic() == "reported" && tu.GetProduced() && tu.GetLastProduced() != nil && !tu.GetFetched() {
				return true
			}
		}
		return false
	})
	if n := len(r.req.GetStatus().GetUsage().GetTopics()); n != 1 {
		t.Errorf("the report lists %d topics, want 1: %v", n, r.req.GetStatus().GetUsage())
	}
}

// TestTransientFailureIsRetried: a switch that fails for a reason that may
// pass (the target did not answer) is reported and retried until it
// applies.
func TestTransientFailureIsRetried(t *testing.T) {
	fp := newFakeProxy("source", "source", "target")
	unreachable := errors.New(`switch to "target": ` + proxy.ErrUnreachable.Error())
	fp.switchErrs = []error{
		errors.Join(unreachable, proxy.ErrUnreachable),
		errors.Join(unreachable, proxy.ErrUnreachable),
	}
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, fp, testConfig(fc.addr))

	mark := fc.mark()
	fc.send(t, desired(1, "target", ""))
	r := fc.waitRequest(t, "the failure report", mark, func(r received) bool { return r.req.GetApplyError() != "" })
	if r.req.GetAppliedVersion() != 0 || !strings.Contains(r.req.GetApplyError(), "unreachable") {
		t.Errorf("failure report: applied_version %d, apply_error %q", r.req.GetAppliedVersion(), r.req.GetApplyError())
	}
	fc.ack(t, mark, 1)
	if got := fp.opsSoFar(); len(got) != 3 {
		t.Errorf("ops = %q, want three switch attempts", got)
	}
	if got := tc.metric(t, "switchyard_sidecar_apply_errors_total"); got != 2 {
		t.Errorf("apply errors = %v, want 2", got)
	}
	if n := tc.logged(zapcore.WarnLevel, "not applied"); n != 1 {
		t.Errorf("%d warnings for one failing state, want 1", n)
	}
}

// TestNoRetryWhileDisconnected: a failing desired state is retried only
// while the control plane is there to see it; once the stream is lost the
// proxy stays as it is, and the state sent again on the next stream
// applies.
func TestNoRetryWhileDisconnected(t *testing.T) {
	fp := newFakeProxy("source", "source", "target")
	for range 1000 {
		fp.switchErrs = append(fp.switchErrs, fmt.Errorf("switch to %q: %w", "target", proxy.ErrUnreachable))
	}
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, fp, testConfig(fc.addr))

	fc.send(t, desired(1, "target", ""))
	waitFor(t, "retries", func() bool { return tc.metric(t, "switchyard_sidecar_apply_errors_total") >= 3 })
	fc.stop()
	waitFor(t, "the retry to be dropped", func() bool { return tc.logged(zapcore.DebugLevel, "not retrying") == 1 })
	attempts := len(fp.opsSoFar())
	fp.mu.Lock()
	fp.switchErrs = nil // the target answers again
	fp.mu.Unlock()
	// Nothing retries any more: the client keeps trying to reconnect, and
	// the proxy stays where it is.
	waitFor(t, "more reconnect attempts", func() bool { return tc.logged(zapcore.DebugLevel, "reconnect failed") >= 5 })
	if got := len(fp.opsSoFar()); got != attempts {
		t.Errorf("%d switch attempts while disconnected", got-attempts)
	}
	if st := fp.Status(); st.ActiveCluster != "source" {
		t.Errorf("proxy moved to %s while disconnected", st.ActiveCluster)
	}

	fc2 := startFake(t, fc.addr)
	mark := fc2.mark()
	fc2.send(t, desired(1, "target", ""))
	fc2.ack(t, mark, 1)
	if st := fp.Status(); st.ActiveCluster != "target" {
		t.Errorf("after the state was sent again: on %s, want target", st.ActiveCluster)
	}
}

// TestRunStopsOnCancel: cancelling Run's context stops it whatever it is
// doing — streaming, waiting to reconnect, or applying a switch — and Run
// returns only once its goroutines are done.
func TestRunStopsOnCancel(t *testing.T) {
	t.Run("streaming", func(t *testing.T) {
		fc := startFake(t, "127.0.0.1:0")
		tc := startClient(t, newFakeProxy("source", "source"), testConfig(fc.addr))
		waitFor(t, "a stream", func() bool { return fc.openStreams() == 1 })
		tc.stop(t)
		waitFor(t, "the stream to close", func() bool { return fc.openStreams() == 0 })
	})
	t.Run("control plane unreachable", func(t *testing.T) {
		tc := startClient(t, newFakeProxy("source", "source"), testConfig(closedAddr(t)))
		waitFor(t, "failed attempts", func() bool { return tc.logged(zapcore.DebugLevel, "reconnect failed") >= 2 })
		tc.stop(t)
	})
	t.Run("switch in progress", func(t *testing.T) {
		fp := newFakeProxy("source", "source", "target")
		fp.block = true
		fc := startFake(t, "127.0.0.1:0")
		tc := startClient(t, fp, testConfig(fc.addr))
		fc.send(t, desired(1, "target", ""))
		select {
		case <-fp.switchCtx:
		case <-time.After(waitTimeout):
			t.Fatal("switch not started")
		}
		tc.stop(t)
		if s := tc.State(); s.AppliedVersion != 0 {
			t.Errorf("applied_version %d after an abandoned switch, want 0", s.AppliedVersion)
		}
	})
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestReady: not ready until a desired state from the control plane is in
// force, or until the startup wait has passed without one.
func TestReady(t *testing.T) {
	t.Run("before Run", func(t *testing.T) {
		c, err := New(testConfig("127.0.0.1:1"), newFakeProxy("source", "source"), newRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ready(); err == nil {
			t.Error("ready before Run")
		}
	})
	tests := []struct {
		name    string
		desired *switchyardv1.DesiredState
		ready   bool
	}{
		{"a desired state applied", desired(1, "target", ""), true},
		{"nothing for this sidecar (version 0)", &switchyardv1.DesiredState{}, true},
		{"a desired state refused", desired(1, "nowhere", ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := startFake(t, "127.0.0.1:0")
			cfg := testConfig(fc.addr)
			cfg.StartupWait = time.Hour
			tc := startClient(t, newFakeProxy("source", "source", "target"), cfg)
			fc.waitRequest(t, "the first message", 0, func(received) bool { return true })
			if err := tc.Ready(); err == nil || !strings.Contains(err.Error(), "desired state") {
				t.Errorf("Ready() = %v before any desired state, want an error saying it waits for one", err)
			}
			mark := fc.mark()
			fc.send(t, tt.desired)
			fc.waitRequest(t, "the report", mark, func(received) bool { return true })
			if err := tc.Ready(); (err == nil) != tt.ready {
				t.Errorf("Ready() = %v, want ready %v", err, tt.ready)
			}
		})
	}
	t.Run("startup wait passed without a control plane", func(t *testing.T) {
		cfg := testConfig(closedAddr(t))
		cfg.StartupWait = 30 * time.Millisecond
		tc := startClient(t, newFakeProxy("source", "source"), cfg)
		waitFor(t, "ready", func() bool { return tc.Ready() == nil })
		waitFor(t, "the startup-wait warning", func() bool { return tc.logged(zapcore.WarnLevel, "startup wait") == 1 })
	})
	t.Run("no startup wait", func(t *testing.T) {
		tc := startClient(t, newFakeProxy("source", "source"), testConfig(closedAddr(t)))
		waitFor(t, "ready", func() bool { return tc.Ready() == nil })
	})
}

// TestRunTwice: Run may be called once.
func TestRunTwice(t *testing.T) {
	tc := startClient(t, newFakeProxy("source", "source"), testConfig(closedAddr(t)))
	waitFor(t, "Run to start", func() bool { return tc.logged(zapcore.InfoLevel, "connecting") == 1 })
	if err := tc.Run(context.Background()); err == nil {
		t.Error("second Run: no error")
	}
}
