package control

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// rawStream is a SidecarService.Connect stream a test drives by hand: a
// forged sidecar says whatever it likes.
type rawStream struct {
	switchyardv1.SidecarService_ConnectClient
	cancel context.CancelFunc
}

// openStream opens a stream on conn with the bearer token (none when
// empty), sends first and returns the stream and the error of its first
// Recv: nil when the control plane accepted the stream and answered.
func openStream(t *testing.T, conn *grpc.ClientConn, token string, first *switchyardv1.ConnectRequest) (*rawStream, *switchyardv1.ConnectResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	t.Cleanup(cancel)
	stream, err := switchyardv1.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A stream the control plane refuses before reading anything (a
	// credential's limit) may end before Send: io.EOF, and the refusal
	// comes from Recv.
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	return &rawStream{SidecarService_ConnectClient: stream, cancel: cancel}, m, err
}

// forged is the first message of a stream that claims to be app/instance,
// to have applied version applied, and to run on target with Produce
// rejected.
func forged(app, instance string, applied uint64) *switchyardv1.ConnectRequest {
	return &switchyardv1.ConnectRequest{
		Identity:       &switchyardv1.SidecarIdentity{App: app, Instance: instance},
		AppliedVersion: applied,
		Status:         &switchyardv1.ProxyStatus{ActiveCluster: "target", Gate: &switchyardv1.Gate{ApiKeys: []int32{produceKey}, Mode: "REJECT"}},
	}
}

// waitConnected waits until exactly the given instances of app are
// connected.
func (p *plane) waitConnected(app string, instances ...string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		for _, sc := range p.reg.List(app) {
			if sc.GetConnected() {
				got = append(got, sc.GetIdentity().GetInstance())
			}
		}
		if slices.Equal(got, instances) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("connected sidecars of %s: %v, want %v", app, got, instances)
		}
		select {
		case <-p.reg.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cutoverToDone runs the cutover of spec() and waits until it is done.
func (p *plane) cutoverToDone() {
	p.t.Helper()
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		p.t.Fatal(err)
	}
	p.waitCutover(resp.GetCutover().GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
}

// TestForgedVersionClaimIsNotAdopted: a stream that claims a version above
// the registry's counter and a status of its own (target, Produce
// rejected) is sent the registry's state, not its own; no other sidecar of
// the application is told anything, and a cutover afterwards runs as
// usual.
func TestForgedVersionClaimIsNotAdopted(t *testing.T) {
	p := startPlane(t, "", nil)
	real := connectSidecar(t, p, "orders", "pod-1", "source")
	p.waitConnected("orders", "pod-1")

	attacker, m, err := openStream(t, p.conn, p.token, forged("orders", "attacker", 1<<40))
	if err != nil {
		t.Fatalf("a stream above the counter (within bounds) is refused: %v", err)
	}
	if d := m.GetDesired(); d.GetActiveCluster() != "" || d.GetGate() != nil {
		t.Errorf("the forged stream was sent %v: its own state adopted, want the registry's (none)", d)
	}
	// The registry answered the stream after attaching it: whatever it
	// decided is in its desired state now.
	for _, sc := range p.reg.List("orders") {
		if d := sc.GetDesired(); d.GetActiveCluster() != "" || d.GetGate() != nil {
			t.Errorf("%s/%s is wanted in %v after a forged claim", sc.GetIdentity().GetApp(), sc.GetIdentity().GetInstance(), d)
		}
	}
	if p.reg.HasRule("adopted-orders") {
		t.Error("the registry adopted the forged state as a rule")
	}
	attacker.cancel()
	p.waitConnected("orders", "pod-1")

	p.cutoverToDone()
	if active, gate := real.state(); active != "target" || gate != nil {
		t.Errorf("after the cutover pod-1 is on %s with gate %v, want target and no gate", active, gate)
	}
}

// TestVersionClaimCannotWrapTheCounter: a stream claiming the largest
// uint64 is refused, and neither the registry's counter nor a later
// cutover suffers — in memory or in the store.
func TestVersionClaimCannotWrapTheCounter(t *testing.T) {
	dir := t.TempDir()
	p := startPlane(t, dir, nil)
	real := connectSidecar(t, p, "orders", "pod-1", "source")
	p.waitConnected("orders", "pod-1")
	// pod-1 has applied a few versions already, as after earlier cutovers.
	sel := &switchyardv1.SidecarSelector{Apps: []string{"orders"}}
	var v uint64
	for range 3 {
		var err error
		if v, err = p.reg.SetRule("earlier", sel, "source", nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if acks, all := p.reg.Acks([]string{"orders/pod-1"}, v); all {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("pod-1 did not apply version %d: %v", v, acks)
		}
		time.Sleep(10 * time.Millisecond)
	}

	attacker, _, err := openStream(t, p.conn, p.token, forged("orders", "attacker", math.MaxUint64))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("a stream claiming version 2^64-1: %v, want InvalidArgument", err)
	}
	attacker.cancel()
	p.waitConnected("orders", "pod-1")

	p.cutoverToDone()
	if active, _ := real.state(); active != "target" {
		t.Errorf("pod-1 on %s after the cutover, want target", active)
	}
	p.stop()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st registryState
	if _, err := store.Get("registry", "state", &st); err != nil {
		t.Fatal(err)
	}
	if st.Counter < v || st.Counter > v+100 {
		t.Errorf("stored version counter %d, want a few versions above %d", st.Counter, v)
	}
}

// TestVersionClaimBound: a claim up to MaxAppliedVersion raises the
// counter; one above both the counter and the bound is refused; and the
// versions the registry issues past the bound are accepted back from its
// sidecars (a claim at the bound must not lock them out).
func TestVersionClaimBound(t *testing.T) {
	p := startPlane(t, "", nil)
	first := forged("orders", "a", MaxAppliedVersion)
	first.Status = &switchyardv1.ProxyStatus{ActiveCluster: "source"}
	a, _, err := openStream(t, p.conn, p.token, first)
	if err != nil {
		t.Fatalf("a claim at the bound: %v", err)
	}
	v, err := p.reg.SetRule("later", &switchyardv1.SidecarSelector{Apps: []string{"orders"}}, "source", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v <= MaxAppliedVersion {
		t.Fatalf("the next version is %d, want above the claim %d", v, uint64(MaxAppliedVersion))
	}
	a.cancel()
	p.waitConnected("orders")
	for _, tc := range []struct {
		instance string
		applied  uint64
		want     codes.Code
	}{
		{"b", v, codes.OK},
		{"c", v + 1, codes.InvalidArgument},
	} {
		s, _, err := openStream(t, p.conn, p.token, forged("orders", tc.instance, tc.applied))
		if status.Code(err) != tc.want {
			t.Errorf("a stream that applied %d (counter %d): %v, want %v", tc.applied, v, err, tc.want)
		}
		s.cancel()
	}
}

// TestSecondStreamForAConnectedInstanceIsRefused: while pod-1's stream is
// open, another stream claiming pod-1 — even with the same token — is
// refused, and cannot stand in for pod-1's acknowledgements. Once pod-1's
// stream has ended, pod-1 reconnects.
func TestSecondStreamForAConnectedInstanceIsRefused(t *testing.T) {
	p := startPlane(t, "", nil)
	real := connectSidecar(t, p, "orders", "pod-1", "source")
	p.waitConnected("orders", "pod-1")

	_, _, err := openStream(t, p.conn, p.token, forged("orders", "pod-1", 0))
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("a second stream for a connected instance: %v, want AlreadyExists", err)
	}
	list := p.reg.List("orders")
	if len(list) != 1 || !list[0].GetConnected() || list[0].GetStatus().GetActiveCluster() != "source" {
		t.Fatalf("after the refused stream: %v, want pod-1 connected on source", list)
	}
	// pod-1's own reports still count: a cutover runs on its acks.
	p.cutoverToDone()

	real.close()
	p.waitConnected("orders")
	connectSidecar(t, p, "orders", "pod-1", "target")
	p.waitConnected("orders", "pod-1")
}
