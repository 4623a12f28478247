package controlclient

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

// tlsFake is a fakeControl served over TLS that also records the client
// certificate each stream was opened with.
type tlsFake struct {
	*fakeControl
	mu    sync.Mutex
	peers []string // the client certificate's CN per stream ("" for none)
}

func (f *tlsFake) Connect(stream switchyardv1.SidecarService_ConnectServer) error {
	cn := ""
	if p, ok := peer.FromContext(stream.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			cn = info.State.PeerCertificates[0].Subject.CommonName
		}
	}
	f.mu.Lock()
	f.peers = append(f.peers, cn)
	f.mu.Unlock()
	return f.fakeControl.Connect(stream)
}

func (f *tlsFake) peersSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.peers...)
}

// startTLSFake serves a tlsFake on 127.0.0.1 with files (CAFile: the client
// CA, required when set).
func startTLSFake(t *testing.T, files tlsfiles.Files) *tlsFake {
	t.Helper()
	cfg, err := tlsfiles.ServerConfig(files, files.CAFile != "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFake{fakeControl: &fakeControl{addr: ln.Addr().String(),
		srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg))), push: make(chan *switchyardv1.ConnectResponse)}}
	switchyardv1.RegisterSidecarServiceServer(f.srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		f.stop()
		<-done
	})
	return f
}

type tlsPKI struct {
	server, sidecar, other tlstest.Paths
}

func newTLSPKI(t *testing.T) tlsPKI {
	t.Helper()
	ca := tlstest.NewCA(t, "control-ca")
	otherCA := tlstest.NewCA(t, "other-ca")
	dir := t.TempDir()
	sub := func(name string, ca *tlstest.CA, is tlstest.Issued) tlstest.Paths {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return tlstest.Write(t, d, ca, is)
	}
	return tlsPKI{
		server:  sub("server", ca, ca.Localhost(t)),
		sidecar: sub("sidecar", ca, ca.Issue(t, tlstest.Leaf{CommonName: "orders-sidecar", Client: true})),
		other:   sub("other", otherCA, otherCA.Localhost(t)),
	}
}

// TestTLS connects to a control plane over TLS: with a client certificate
// and no token (mTLS), with a token over TLS, and to a server whose
// certificate the sidecar does not trust (never connects, says why).
func TestTLS(t *testing.T) {
	pki := newTLSPKI(t)
	t.Run("client certificate", func(t *testing.T) {
		f := startTLSFake(t, tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key, CAFile: pki.sidecar.CA})
		cfg := testConfig(f.addr)
		cfg.TLS = tlsfiles.Files{CAFile: pki.server.CA, CertFile: pki.sidecar.Cert, KeyFile: pki.sidecar.Key}
		startClient(t, newFakeProxy("a", "a", "b"), cfg)
		f.waitRequest(t, "the first message", 0, func(r received) bool { return r.first })
		if got := f.peersSoFar(); len(got) != 1 || got[0] != "orders-sidecar" {
			t.Fatalf("streams opened with client certificates %q, want [orders-sidecar]", got)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.auth[0] != "" {
			t.Fatalf("sent authorization %q without a token configured", f.auth[0])
		}
	})
	t.Run("token over TLS", func(t *testing.T) {
		f := startTLSFake(t, tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key})
		cfg := testConfig(f.addr)
		cfg.TLS = tlsfiles.Files{CAFile: pki.server.CA}
		cfg.Token = "tls-token"
		startClient(t, newFakeProxy("a", "a", "b"), cfg)
		f.waitRequest(t, "the first message", 0, func(r received) bool { return r.first })
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.auth[0] != "Bearer tls-token" || f.peers[0] != "" {
			t.Fatalf("authorization %q, client certificate %q; want the token and none", f.auth[0], f.peers[0])
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		f := startTLSFake(t, tlsfiles.Files{CertFile: pki.other.Cert, KeyFile: pki.other.Key})
		cfg := testConfig(f.addr)
		cfg.TLS = tlsfiles.Files{CAFile: pki.server.CA}
		tc := startClient(t, newFakeProxy("a", "a", "b"), cfg)
		waitFor(t, "a warning that says why", func() bool {
			for _, e := range tc.logs.FilterLevelExact(zapcore.WarnLevel).All() {
				if msg, _ := e.ContextMap()["error"].(string); strings.Contains(msg, "certificate signed by unknown authority") {
					return true
				}
			}
			return false
		})
		if n := f.openStreams(); n != 0 {
			t.Fatalf("%d streams open to an untrusted server", n)
		}
	})
}

func TestTLSConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	cfg := testConfig("127.0.0.1:9180")
	cfg.TLS = tlsfiles.Files{CAFile: missing}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "tls.caFile: open "+missing) {
		t.Fatalf("Validate: %v, want tls.caFile named", err)
	}
	cfg.TLS = tlsfiles.Files{CertFile: missing}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "tls.keyFile: must be set") {
		t.Fatalf("Validate: %v, want tls.keyFile named", err)
	}
}
