package main

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
)

// sidecarServer is a minimal control plane: it records what sidecars send
// and sends the desired states the test pushes on the open stream.
type sidecarServer struct {
	switchyardv1.UnimplementedSidecarServiceServer
	push chan *switchyardv1.DesiredState

	mu   sync.Mutex
	auth []string
	got  []*switchyardv1.ConnectRequest
}

func (s *sidecarServer) Connect(stream switchyardv1.SidecarService_ConnectServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	s.mu.Lock()
	s.auth = append(s.auth, md.Get("authorization")...)
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.mu.Lock()
			s.got = append(s.got, req)
			s.mu.Unlock()
		}
	}()
	for {
		select {
		case d := <-s.push:
			if err := stream.Send(&switchyardv1.ConnectResponse{Desired: d}); err != nil {
				return err
			}
		case <-errc:
			return nil
		}
	}
}

// waitFor returns the first message that satisfies match.
func (s *sidecarServer) waitFor(t *testing.T, what string, match func(*switchyardv1.ConnectRequest) bool) *switchyardv1.ConnectRequest {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		for _, r := range s.got {
			if match(r) {
				s.mu.Unlock()
				return r
			}
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no message with %s within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunProxyFollowsControlPlane runs `switchyard proxy --control ...`
// against a fake control plane and two kfake clusters: /readyz waits for
// the first desired state, which is applied (switch and gate) and
// acknowledged; status and metrics show it; cancel exits 0.
func TestRunProxyFollowsControlPlane(t *testing.T) {
	source, target := kafkatest.Pair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &sidecarServer{push: make(chan *switchyardv1.DesiredState)}
	gs := grpc.NewServer()
	switchyardv1.RegisterSidecarServiceServer(gs, cp)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	admin := freeAddr(t)
	base := "http://" + admin
	args := []string{"proxy",
		"--cluster", "source=" + strings.Join(source.Bootstrap, ","),
		"--cluster", "target=" + strings.Join(target.Bootstrap, ","),
		"--active", "source", "--listen", freeAddr(t), "--admin", admin, "--broker-port-base=-1",
		"--control", ln.Addr().String(), "--app", "orders", "--instance", "orders-0", "--label", "role=producer",
		"--control-wait", "10m", "--log-level", "warn",
	}
	env := map[string]string{"SWITCHYARD_CONTROL_TOKEN": "s3cret"}
	r := startRun(t, args, env)

	hello := cp.waitFor(t, "the sidecar's identity", func(req *switchyardv1.ConnectRequest) bool { return req.GetIdentity() != nil })
	if id := hello.GetIdentity(); id.GetApp() != "orders" || id.GetInstance() != "orders-0" || id.GetLabels()["role"] != "producer" {
		t.Errorf("identity = %v", id)
	}
	cp.mu.Lock()
	auth := strings.Join(cp.auth, ",")
	cp.mu.Unlock()
	if auth != "Bearer s3cret" {
		t.Errorf("authorization = %q, want Bearer s3cret", auth)
	}

	// Wait for the proxy to be ready itself (its status names brokers),
	// then /readyz must still say no: the control plane has not spoken.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case code := <-r.exited:
			t.Fatalf("run exited with %d; stderr:\n%s", code, r.stderr.String())
		default:
		}
		code, body := httpDo(t, http.MethodGet, base+"/readyz", "")
		if code == http.StatusServiceUnavailable && strings.Contains(string(body), "control plane") {
			break
		}
		if code == http.StatusOK {
			t.Fatalf("/readyz 200 before any desired state")
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said it waits for the control plane (last %d %s); stderr:\n%s", code, body, r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	select {
	case cp.push <- &switchyardv1.DesiredState{Version: 1, ActiveCluster: "target", Gate: &switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "REJECT"}}:
	case <-time.After(20 * time.Second):
		t.Fatal("no stream took the desired state")
	}
	ack := cp.waitFor(t, "applied_version 1", func(req *switchyardv1.ConnectRequest) bool { return req.GetAppliedVersion() == 1 })
	if ack.GetApplyError() != "" || ack.GetStatus().GetActiveCluster() != "target" || ack.GetStatus().GetGate().GetMode() != "REJECT" {
		t.Errorf("acknowledgement: error %q, status %v", ack.GetApplyError(), ack.GetStatus())
	}
	if code, body := httpDo(t, http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz after the desired state: %d %s", code, body)
	}
	code, body := httpDo(t, http.MethodGet, base+"/v1/status", "")
	if st := jsonField(t, body, "status").(map[string]any); code != http.StatusOK || st["activeCluster"] != "target" {
		t.Errorf("status: %d %s", code, body)
	}
	_, metrics := httpDo(t, http.MethodGet, base+"/metrics", "")
	for _, w := range []string{"switchyard_sidecar_applied_version 1", "switchyard_sidecar_control_connected 1", "switchyard_proxy_switches_total"} {
		if !strings.Contains(string(metrics), w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}

	r.stop()
}
