// Package proxytest starts Switchyard proxies for tests outside the proxy
// package: on ephemeral loopback ports, in front of kafkatest clusters, and
// stopped when the test ends.
package proxytest

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/proxy"
)

// Handle is a running proxy and the registry holding its metrics.
type Handle struct {
	*proxy.Proxy
	Registry *prometheus.Registry
}

// Counter returns the sum of a counter's series whose labels include all of
// labels (name without the switchyard_proxy_ prefix, e.g. "response_bytes_total").
func (h *Handle) Counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_proxy_"+name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// Start starts a proxy in front of the clusters, active on the first, and
// returns once it is ready. mutate may adjust the configuration.
func Start(t testing.TB, clusters []*kafkatest.Cluster, mutate ...func(*proxy.Config)) *Handle {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	for _, c := range clusters {
		cfg.Clusters = append(cfg.Clusters, proxy.ClusterConfig{Name: c.Name, Bootstrap: c.Bootstrap})
	}
	cfg.Active = clusters[0].Name
	for _, m := range mutate {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), reg)
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
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := p.Ready()
		if err == nil {
			return &Handle{Proxy: p, Registry: reg}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready within 15s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
