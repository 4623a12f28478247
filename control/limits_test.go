package control

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/identity"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

// TestSidecarIdentityRulesOnTheServer: the control plane applies the
// sidecar's own rules for names and labels to every stream, since a
// credential's holder need not run a sidecar: a first message that breaks
// them is refused and registers nothing, a later one ends the stream.
func TestSidecarIdentityRulesOnTheServer(t *testing.T) {
	p := startPlane(t, "", nil)
	labels := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	clusters := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("c%d", i)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		id   *switchyardv1.SidecarIdentity
		cl   []string
		want string // "" accepted, else part of the InvalidArgument message
	}{
		{"the most labels and clusters", &switchyardv1.SidecarIdentity{App: "orders", Instance: "shop/orders-1", Labels: labels(identity.MaxLabels)},
			clusters(identity.MaxClusters), ""},
		{"no instance", &switchyardv1.SidecarIdentity{App: "orders"}, nil, "app and instance"},
		{"app with a space", &switchyardv1.SidecarIdentity{App: "or ders", Instance: "a"}, nil, "identity.app"},
		{"long instance", &switchyardv1.SidecarIdentity{App: "orders", Instance: strings.Repeat("i", 254)}, nil, "identity.instance"},
		{"label key with =", &switchyardv1.SidecarIdentity{App: "orders", Instance: "b", Labels: map[string]string{"a=b": "c"}}, nil, "identity.labels"},
		{"long label value", &switchyardv1.SidecarIdentity{App: "orders", Instance: "c", Labels: map[string]string{"l": strings.Repeat("x", 3<<10)}},
			nil, "identity.labels"},
		{"too many labels", &switchyardv1.SidecarIdentity{App: "orders", Instance: "d", Labels: labels(identity.MaxLabels + 1)}, nil,
			fmt.Sprintf("identity.labels: %d labels", identity.MaxLabels+1)},
		{"too many clusters", &switchyardv1.SidecarIdentity{App: "orders", Instance: "e"}, clusters(identity.MaxClusters + 1), "clusters:"},
		{"a cluster name with a space", &switchyardv1.SidecarIdentity{App: "orders", Instance: "f"}, []string{"so urce"}, "clusters[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, err := openStream(t, p.conn, p.token, &switchyardv1.ConnectRequest{Identity: tc.id, Clusters: tc.cl,
				Status: &switchyardv1.ProxyStatus{ActiveCluster: "source"}})
			defer s.cancel()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want INVALID_ARGUMENT with %q", err, tc.want)
			}
			for _, sc := range p.reg.List("orders") {
				if inst := sc.GetIdentity().GetInstance(); inst == tc.id.GetInstance() {
					t.Errorf("registered: %.40q", inst)
				}
			}
		})
	}

	// A stream accepted, then a report that breaks the rules: it ends.
	s, _, err := openStream(t, p.conn, p.token, forged("orders", "later", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.cancel()
	if err := s.Send(&switchyardv1.ConnectRequest{Clusters: clusters(identity.MaxClusters + 1)}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := s.Recv()
		if err == nil {
			continue // a desired state
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "clusters:") {
			t.Errorf("a later report with too many clusters: %v, want INVALID_ARGUMENT", err)
		}
		break
	}

	// An apply error is kept up to 1 KiB.
	s2, _, err := openStream(t, p.conn, p.token, &switchyardv1.ConnectRequest{
		Identity: &switchyardv1.SidecarIdentity{App: "billing", Instance: "pod-1"}, ApplyError: strings.Repeat("e", 100<<10)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.cancel()
	if got := len(p.reg.List("billing")[0].GetApplyError()); got > maxApplyError+3 {
		t.Errorf("apply error kept: %d bytes, want at most %d", got, maxApplyError+3)
	}
}

// TestSidecarMessageSize: a sidecar's message is bounded
// (Limits.MessageBytes, 256 KiB by default), not gRPC's 4 MiB.
func TestSidecarMessageSize(t *testing.T) {
	p := startPlane(t, "", nil)
	report := func(instance string, size int) *switchyardv1.ConnectRequest {
		m := forged("orders", instance, 0)
		m.Status.Clusters = []*switchyardv1.ClusterStatus{{Name: "source", LastError: strings.Repeat("x", size)}}
		return m
	}
	s, _, err := openStream(t, p.conn, p.token, report("big", 200<<10))
	if err != nil {
		t.Fatalf("a 200 KiB report: %v", err)
	}
	s.cancel()
	_, _, err = openStream(t, p.conn, p.token, report("huge", 300<<10))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 300 KiB report: %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, sc := range p.reg.List("orders") {
		if sc.GetIdentity().GetInstance() == "huge" {
			t.Errorf("the 300 KiB report was registered")
		}
	}
}

// TestSidecarsPerCredential: one credential may have at most
// Limits.SidecarsPerCredential streams open and sidecars remembered (a
// disconnected one is forgotten early to make room); other credentials
// are not affected.
func TestSidecarsPerCredential(t *testing.T) {
	pki := newPKI(t)
	cfg := secureConfig(pki, "")
	cfg.Limits.SidecarsPerCredential = 3
	sp := startSecurePlane(t, cfg, pki)
	conn := sp.dial(t, tlstest.Paths{}, sidecarsSecret)
	var streams []*rawStream
	for i := range 3 {
		s, _, err := openStream(t, conn, "", forged("probe", fmt.Sprintf("pod-%d", i), 0))
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	_, _, err := openStream(t, conn, "", forged("probe", "pod-3", 0))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "limits.sidecarsPerCredential") ||
		!strings.Contains(err.Error(), "token sidecars") {
		t.Errorf("a fourth stream: %v, want RESOURCE_EXHAUSTED naming the credential and limits.sidecarsPerCredential", err)
	}
	// Another credential (a certificate) still connects.
	if err := connectOnce(sp.dial(t, sp.pki.orders, ""), "by-certificate"); err != nil {
		t.Errorf("another credential: %v", err)
	}
	// One goes away: a new instance takes its place, and the registry
	// keeps three of the token's sidecars, not four.
	streams[0].cancel()
	sp.waitConnected("probe", "pod-1", "pod-2")
	s, _, err := openStream(t, conn, "", forged("probe", "pod-4", 0))
	if err != nil {
		t.Fatalf("after one left: %v", err)
	}
	defer s.cancel()
	var mine []string
	for _, sc := range sp.reg.List("probe") {
		if sc.GetCredential() == "token sidecars" {
			mine = append(mine, sc.GetIdentity().GetInstance())
		}
	}
	if strings.Join(mine, ",") != "pod-1,pod-2,pod-4" {
		t.Errorf("the token's sidecars: %v, want pod-1, pod-2, pod-4 (pod-0 forgotten)", mine)
	}
}

// TestRegistryRoomPerCredential: the registry itself refuses a new
// instance when all of a credential's sidecars are connected.
func TestRegistryRoomPerCredential(t *testing.T) {
	r := newTestRegistry(t)
	who := principal{kind: "token", name: "shop", role: RoleSidecar, apps: []string{"orders"}}
	first := forged("orders", "a", 0)
	if _, _, err := r.attach(first.GetIdentity(), first, who, 1); err != nil {
		t.Fatal(err)
	}
	second := forged("orders", "b", 0)
	if _, _, err := r.attach(second.GetIdentity(), second, who, 1); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second instance beyond the limit: %v, want RESOURCE_EXHAUSTED", err)
	}
	other := principal{kind: "token", name: "billing", role: RoleSidecar, apps: []string{"orders"}}
	if _, _, err := r.attach(second.GetIdentity(), second, other, 1); err != nil {
		t.Errorf("another credential: %v", err)
	}
}

// newTestRegistry is a registry on a new store, logging nothing.
func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(store, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRegistryForgetsOnATimer: disconnected sidecars are forgotten after
// forgetAfter even when nobody lists them.
func TestRegistryForgetsOnATimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTestRegistry(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go r.forgetLoop(ctx)
		for i := range 5 {
			m := forged("orders", fmt.Sprintf("gone-%d", i), 0)
			sc, gen, err := r.attach(m.GetIdentity(), m, anonymous, 100)
			if err != nil {
				t.Fatal(err)
			}
			r.detach(sc, gen)
		}
		time.Sleep(r.forgetAfter + r.forgetAfter/10 + time.Second)
		synctest.Wait()
		r.mu.Lock()
		n := len(r.sidecars)
		r.mu.Unlock()
		if n != 0 {
			t.Errorf("the registry still remembers %d sidecars gone for longer than %v", n, r.forgetAfter)
		}
	})
}

// TestStreamsPerConnection: the HTTP/2 settings the control plane sends
// bound the concurrent streams of a connection (Limits.StreamsPerConnection).
func TestStreamsPerConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int
		want  uint32
	}{{"default", 0, 100}, {"configured", 7, 7}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlaneConfig(t, "", nil, ServerConfig{Listen: "127.0.0.1:0", Limits: Limits{StreamsPerConnection: tc.limit}})
			if got := maxConcurrentStreams(t, p.addr); got != tc.want {
				t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", got, tc.want)
			}
		})
	}
}

// maxConcurrentStreams opens an h2c connection to addr and returns the
// SETTINGS_MAX_CONCURRENT_STREAMS of the server's first SETTINGS frame (0
// when absent: unlimited).
func maxConcurrentStreams(t *testing.T, addr string) uint32 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The client preface, then an empty SETTINGS frame.
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("read frame header: %v", err)
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, length)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		const settings, ack, maxStreams = 0x4, 0x1, 0x3
		if hdr[3] != settings || hdr[4]&ack != 0 {
			continue
		}
		for i := 0; i+6 <= len(payload); i += 6 {
			if binary.BigEndian.Uint16(payload[i:]) == maxStreams {
				return binary.BigEndian.Uint32(payload[i+2:])
			}
		}
		return 0
	}
}

// TestVanishedSidecarIsNoticed: a sidecar whose peer vanished without
// closing the connection (a killed node: nothing more arrives, not even a
// reset) is counted as disconnected once the connection stops answering
// pings, and its instance may connect again.
func TestVanishedSidecarIsNoticed(t *testing.T) {
	p := startPlaneConfig(t, "", nil, ServerConfig{Listen: "127.0.0.1:0", Token: "s3cret",
		keepaliveTime: 200 * time.Millisecond, keepaliveTimeout: 300 * time.Millisecond})
	relay := newBlackholeRelay(t, p.addr)
	conn, err := grpc.NewClient(relay.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A stream without a deadline: a deadline would end it on the
	// server too (grpc-timeout), whether the peer answers or not.
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+p.token))
	defer cancel()
	s, err := switchyardv1.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(forged("orders", "pod-1", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	relay.swallow()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := p.reg.List("orders")
		if len(l) == 1 && !l[0].GetConnected() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vanished sidecar still counts as connected after 10 s (keepalive 200 ms + 300 ms)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	again, _, err := openStream(t, p.conn, p.token, forged("orders", "pod-1", 0))
	if err != nil {
		t.Fatalf("the instance connects again: %v", err)
	}
	again.cancel()
}

// blackholeRelay forwards TCP connections to a server until swallow is
// called; from then on it reads and drops everything, in both directions,
// and closes nothing: what a peer on a node that died looks like.
type blackholeRelay struct {
	addr string
	mu   sync.Mutex
	hole bool
}

func newBlackholeRelay(t *testing.T, target string) *blackholeRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &blackholeRelay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, u)
			connsMu.Unlock()
			wg.Go(func() { r.pipe(u, c) })
			wg.Go(func() { r.pipe(c, u) })
		}
	})
	return r
}

func (r *blackholeRelay) swallow() {
	r.mu.Lock()
	r.hole = true
	r.mu.Unlock()
}

// pipe copies src to dst until src fails, dropping what arrives after
// swallow.
func (r *blackholeRelay) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		hole := r.hole
		r.mu.Unlock()
		if !hole {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}
