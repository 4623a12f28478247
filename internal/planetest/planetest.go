// Package planetest runs a control plane for end-to-end tests — one mirror
// from the source to the target cluster, a bearer token, a store in a
// temporary directory, stopped (and checked) when the test ends — and
// sidecars that follow it.
package planetest

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// Start runs a control plane whose clusters are source and target and
// whose mirror (returned too) copies the named topics; it requires token.
// The plane stops when the test ends, and an error it returns fails the
// test.
func Start(t testing.TB, source, target *kafkatest.Cluster, token string, topicNames ...string) (*control.Plane, *mirror.Mirror) {
	t.Helper()
	mc := mirror.DefaultConfig()
	mc.Name = kafkatest.Topic(t, "m")
	mc.Topics = topics.Policy{Include: topicNames}
	mc.TxnMaxInterval = 100 * time.Millisecond
	mc.TopicSyncInterval = 500 * time.Millisecond
	plane, err := control.NewPlane(context.Background(), control.PlaneConfig{
		Server:   control.ServerConfig{Listen: "127.0.0.1:0", Token: token},
		StoreDir: t.TempDir(),
		Clusters: []*switchyardv1.Cluster{{Name: "source", Bootstrap: source.Bootstrap}, {Name: "target", Bootstrap: target.Bootstrap}},
		Mirrors:  []control.PlaneMirror{{Source: "source", Target: "target", Config: mc}},
	}, prometheus.NewRegistry(), zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- plane.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	return plane, plane.Mirror(mc.Name)
}

// Sidecar starts a proxy in front of the clusters that follows plane as
// instance of app (with labels, reporting its status every 100 ms), until
// the test ends.
func Sidecar(t testing.TB, plane *control.Plane, token, app, instance string, labels map[string]string, clusters ...*kafkatest.Cluster) *proxytest.Handle {
	t.Helper()
	h := proxytest.Start(t, clusters)
	cfg := controlclient.DefaultConfig()
	cfg.Address, cfg.App, cfg.Instance, cfg.Token = plane.Addr().String(), app, instance, token
	cfg.Labels = labels
	cfg.StatusInterval = 100 * time.Millisecond
	cc, err := controlclient.New(cfg, h.Proxy, h.Registry, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cc.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return h
}

// Dial returns a client of plane's control API, closed when the test ends,
// and a function that adds the bearer token to a context (the calls that
// change state need it).
func Dial(t testing.TB, plane *control.Plane, token string) (switchyardv1.ControlServiceClient, func(context.Context) context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(plane.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return switchyardv1.NewControlServiceClient(conn), func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
}
