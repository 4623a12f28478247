package proxy

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// testProxy is a running proxy in front of a source and a target cluster.
type testProxy struct {
	*Proxy
	source, target *kafkatest.Cluster
	reg            *prometheus.Registry
}

// startProxy starts a proxy on ephemeral loopback ports in front of the
// given clusters, active on the first, and waits until it is ready.
func startProxy(t *testing.T, source, target *kafkatest.Cluster, mutate ...func(*Config)) *testProxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: source.Bootstrap}}
	if target != nil {
		cfg.Clusters = append(cfg.Clusters, ClusterConfig{Name: "target", Bootstrap: target.Bootstrap})
	}
	cfg.Active = "source"
	cfg.DrainTimeout = 5 * time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	p := runProxy(t, cfg, reg, zap.WarnLevel)
	eventually(t, 10*time.Second, "proxy ready", func() error { return p.Ready() })
	return &testProxy{Proxy: p, source: source, target: target, reg: reg}
}

// runProxy runs a proxy until the test ends, without waiting for it to
// become ready; it logs at the given level and above.
func runProxy(t *testing.T, cfg Config, reg *prometheus.Registry, level zapcore.Level) *Proxy {
	t.Helper()
	p, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(level)), reg)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("proxy did not stop within 15s")
		}
	})
	return p
}

// client returns a franz-go client bootstrapped at the proxy.
func (tp *testProxy) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(tp.Addr().String())}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isLocal reports whether addr is one of the proxy's own listeners.
func (tp *testProxy) isLocal(host string, port int32) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if addr == tp.Addr().String() {
		return true
	}
	for _, b := range tp.BrokerAddrs() {
		if b == addr {
			return true
		}
	}
	return false
}

var errNotYet = errors.New("not yet")

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
