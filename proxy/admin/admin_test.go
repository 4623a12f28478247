package admin

import (
	"bytes"
	"context"
	"encoding/json"
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
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

// The proxy core must keep satisfying the interface this package declares.
var _ Proxy = (*proxy.Proxy)(nil)

// fakeProxy is a Proxy whose answers the test sets. Switch to "slow" blocks
// until ctx ends; when block is set, every other Switch signals entered and
// waits for release (or ctx).
type fakeProxy struct {
	mu        sync.Mutex
	status    proxy.Status
	gate      proxy.Gate
	gateSet   bool
	switched  []string
	switchErr error
	gateErr   error
	readyErr  error

	block   bool
	entered chan struct{}
	release chan struct{}
}

func newFakeProxy() *fakeProxy {
	return &fakeProxy{entered: make(chan struct{}), release: make(chan struct{})}
}

func (f *fakeProxy) Status() proxy.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeProxy) Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error) {
	f.mu.Lock()
	block, err := f.block, f.switchErr
	f.switched = append(f.switched, cluster)
	f.mu.Unlock()
	if cluster == "slow" {
		<-ctx.Done()
		return proxy.SwitchReport{}, fmt.Errorf("drain: %w", ctx.Err())
	}
	if block {
		close(f.entered)
		select {
		case <-f.release:
		case <-ctx.Done():
			return proxy.SwitchReport{}, ctx.Err()
		}
	}
	if err != nil {
		return proxy.SwitchReport{}, err
	}
	start := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	return proxy.SwitchReport{
		From: "source", To: cluster,
		Started: start, Applied: start.Add(250 * time.Millisecond),
		Drained: 7, FetchesAnsweredEarly: 2, ConnectionsClosed: 1,
	}, nil
}

func (f *fakeProxy) SetGate(g proxy.Gate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gateErr != nil {
		return f.gateErr
	}
	f.gate, f.gateSet = g, true
	return nil
}

func (f *fakeProxy) ClearGate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate, f.gateSet = proxy.Gate{}, false
}

func (f *fakeProxy) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readyErr
}

func (f *fakeProxy) set(fn func(f *fakeProxy)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// testServer is a running Server with the means to reach and stop it.
type testServer struct {
	addr   string
	base   string
	cancel context.CancelFunc
	done   chan error // receives Serve's result
}

// start runs a Server for p on 127.0.0.1:0 and stops it at cleanup.
func start(t *testing.T, p Proxy, reg *prometheus.Registry, cfg Config) *testServer {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s, err := New(cfg, p, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().String(), base: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ts.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// The listener accepts (into its backlog) from here on; Addr is set once
	// Serve has started.
	waitFor(t, "Addr", func() bool { return s.Addr() != nil })
	if got := s.Addr().String(); got != ts.addr {
		t.Fatalf("Addr() = %s, want %s", got, ts.addr)
	}
	return ts
}

func defaultTestConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	return cfg
}

// do sends an HTTP/1.1 request, with Content-Type application/json when it
// has a body, and returns the status code and body. header holds further
// name, value pairs.
func do(t *testing.T, method, url, body string, header ...string) (int, []byte) {
	t.Helper()
	h := map[string]string{}
	if body != "" {
		h["Content-Type"] = "application/json"
	}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	code, b := rawRequest(t, method, url, body, h)
	return code, []byte(b)
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

// at walks a decoded JSON value by object keys and array indexes.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %v is not an object", path, v)
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("at %v: no key %q in %v", path, k, m)
			}
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("at %v: %v is not an array with index %d", path, v, k)
			}
			v = a[k]
		}
	}
	return v
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func richStatus() proxy.Status {
	start := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	return proxy.Status{
		ActiveCluster: "target",
		ClusterID:     "virtual-1",
		Switching:     false,
		Gate:          proxy.Gate{APIKeys: []int16{0, 8}, Mode: proxy.GateHold},
		Connections:   3,
		InFlight:      2,
		Held:          1,
		Switches:      4,
		LastSwitch: &proxy.SwitchReport{
			From: "source", To: "target",
			Started: start, Applied: start.Add(1500 * time.Millisecond),
			Drained: 5, FetchesAnsweredEarly: 1, ConnectionsClosed: 0,
		},
		Brokers: []proxy.VirtualBroker{
			{ID: 0, Address: "127.0.0.1:9093", Upstream: "b1.target:9092", UpstreamID: 101},
			{ID: 1, Address: "127.0.0.1:9094", Upstream: "", UpstreamID: -1},
		},
		Clusters: []proxy.ClusterStatus{
			{Name: "source", Bootstrap: []string{"s1:9092"}, Brokers: 3, RealClusterID: "src-id"},
			{Name: "target", Bootstrap: []string{"t1:9092", "t2:9092"}, Brokers: 1, RealClusterID: "tgt-id", LastError: "boom"},
		},
		Usage: proxy.Usage{
			Topics: []proxy.TopicUsage{
				{Topic: "in", Fetched: true, LastFetched: start.Add(2 * time.Second)},
				{Topic: "out", Produced: true, LastProduced: start.Add(3 * time.Second), Created: true},
			},
			Groups: []proxy.GroupUsage{
				{Group: "app", Protocol: "classic", ProtocolNames: []string{"cooperative-sticky"}, MemberIDs: []string{"m-1"},
					InstanceIDs: []string{"i-1"}, ClientIDs: []string{"c-1"}, Transactional: true},
			},
			Transactions: []proxy.TransactionalUsage{{ID: "app-txn", Open: true, Groups: []string{"app"}}},
			Dropped:      2,
		},
	}
}

func TestRESTStatus(t *testing.T) {
	fp := newFakeProxy()
	ts := start(t, fp, nil, defaultTestConfig())

	t.Run("full", func(t *testing.T) {
		fp.set(func(f *fakeProxy) { f.status = richStatus() })
		code, body := do(t, http.MethodGet, ts.base+"/v1/status", "")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		m := decode(t, body)
		checks := []struct {
			path []any
			want any
		}{
			{[]any{"status", "activeCluster"}, "target"},
			{[]any{"status", "clusterId"}, "virtual-1"},
			{[]any{"status", "switching"}, false},
			{[]any{"status", "gate", "apiKeys"}, []any{0.0, 8.0}},
			{[]any{"status", "gate", "mode"}, "HOLD"},
			// int64 and uint64 are strings in the proto3 JSON mapping.
			{[]any{"status", "connections"}, "3"},
			{[]any{"status", "inFlight"}, "2"},
			{[]any{"status", "held"}, "1"},
			{[]any{"status", "switches"}, "4"},
			{[]any{"status", "lastSwitch", "from"}, "source"},
			{[]any{"status", "lastSwitch", "to"}, "target"},
			{[]any{"status", "lastSwitch", "started"}, "2026-10-01T12:00:00Z"},
			{[]any{"status", "lastSwitch", "applied"}, "2026-10-01T12:00:01.500Z"},
			{[]any{"status", "lastSwitch", "duration"}, "1.500s"},
			{[]any{"status", "lastSwitch", "drained"}, "5"},
			{[]any{"status", "lastSwitch", "fetchesAnsweredEarly"}, "1"},
			{[]any{"status", "lastSwitch", "connectionsClosed"}, "0"},
			{[]any{"status", "brokers", 0, "id"}, 0.0},
			{[]any{"status", "brokers", 0, "address"}, "127.0.0.1:9093"},
			{[]any{"status", "brokers", 0, "upstream"}, "b1.target:9092"},
			{[]any{"status", "brokers", 0, "upstreamId"}, 101.0},
			{[]any{"status", "brokers", 1, "upstreamId"}, -1.0},
			{[]any{"status", "clusters", 1, "name"}, "target"},
			{[]any{"status", "clusters", 1, "bootstrap"}, []any{"t1:9092", "t2:9092"}},
			{[]any{"status", "clusters", 1, "brokers"}, 1.0},
			{[]any{"status", "clusters", 1, "realClusterId"}, "tgt-id"},
			{[]any{"status", "clusters", 1, "lastError"}, "boom"},
			{[]any{"status", "clusters", 0, "lastError"}, ""},
			{[]any{"status", "usage", "topics", 0, "topic"}, "in"},
			{[]any{"status", "usage", "topics", 0, "fetched"}, true},
			{[]any{"status", "usage", "topics", 0, "produced"}, false},
			{[]any{"status", "usage", "topics", 0, "lastFetched"}, "2026-10-01T12:00:02Z"},
			{[]any{"status", "usage", "topics", 0, "lastProduced"}, nil},
			{[]any{"status", "usage", "topics", 1, "topic"}, "out"},
			{[]any{"status", "usage", "topics", 1, "produced"}, true},
			{[]any{"status", "usage", "topics", 1, "created"}, true},
			{[]any{"status", "usage", "topics", 1, "lastProduced"}, "2026-10-01T12:00:03Z"},
			{[]any{"status", "usage", "groups", 0, "group"}, "app"},
			{[]any{"status", "usage", "groups", 0, "protocol"}, "classic"},
			{[]any{"status", "usage", "groups", 0, "protocolNames"}, []any{"cooperative-sticky"}},
			{[]any{"status", "usage", "groups", 0, "memberIds"}, []any{"m-1"}},
			{[]any{"status", "usage", "groups", 0, "instanceIds"}, []any{"i-1"}},
			{[]any{"status", "usage", "groups", 0, "clientIds"}, []any{"c-1"}},
			{[]any{"status", "usage", "groups", 0, "transactional"}, true},
			{[]any{"status", "usage", "transactions", 0, "id"}, "app-txn"},
			{[]any{"status", "usage", "transactions", 0, "open"}, true},
			{[]any{"status", "usage", "transactions", 0, "groups"}, []any{"app"}},
			{[]any{"status", "usage", "dropped"}, "2"},
		}
		for _, c := range checks {
			got := at(t, m, c.path...)
			if gj, wj := mustJSON(t, got), mustJSON(t, c.want); gj != wj {
				t.Errorf("%v = %s, want %s", c.path, gj, wj)
			}
		}
	})

	t.Run("empty", func(t *testing.T) {
		fp.set(func(f *fakeProxy) { f.status = proxy.Status{ActiveCluster: "source"} })
		code, body := do(t, http.MethodGet, ts.base+"/v1/status", "")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		m := decode(t, body)
		// No gate, no switch and no usage yet read as null, not as empty
		// objects.
		for _, key := range []string{"gate", "lastSwitch", "usage"} {
			if v := at(t, m, "status", key); v != nil {
				t.Errorf("status.%s = %v, want null", key, v)
			}
		}
		if v := at(t, m, "status", "brokers"); len(v.([]any)) != 0 {
			t.Errorf("status.brokers = %v, want []", v)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return string(b)
}

func TestRESTSwitch(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		err      error
		header   []string
		wantCode int
		wantMsg  string
	}{
		{name: "ok", body: `{"cluster":"target"}`, wantCode: http.StatusOK},
		{name: "no cluster", body: `{}`, wantCode: http.StatusBadRequest, wantMsg: "no cluster named"},
		{name: "bad json", body: `{"cluster":`, wantCode: http.StatusBadRequest},
		{name: "unknown cluster", body: `{"cluster":"nowhere"}`, err: fmt.Errorf("%w %q", proxy.ErrUnknownCluster, "nowhere"), wantCode: http.StatusNotFound, wantMsg: `unknown cluster "nowhere"`},
		{name: "in progress", body: `{"cluster":"target"}`, err: proxy.ErrSwitchInProgress, wantCode: http.StatusConflict, wantMsg: "already in progress"},
		{name: "closed", body: `{"cluster":"target"}`, err: proxy.ErrClosed, wantCode: http.StatusServiceUnavailable, wantMsg: "proxy closed"},
		{name: "unreachable", body: `{"cluster":"target"}`, err: fmt.Errorf("dial: %w", proxy.ErrUnreachable), wantCode: http.StatusServiceUnavailable},
		{name: "other", body: `{"cluster":"target"}`, err: errors.New("disk on fire"), wantCode: http.StatusInternalServerError, wantMsg: `switch to "target": disk on fire`},
		// grpc-gateway turns Grpc-Timeout into the handler's deadline.
		{name: "deadline", body: `{"cluster":"slow"}`, header: []string{"Grpc-Timeout", "20m"}, wantCode: http.StatusGatewayTimeout, wantMsg: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy()
			fp.switchErr = tt.err
			ts := start(t, fp, nil, defaultTestConfig())
			code, body := do(t, http.MethodPost, ts.base+"/v1/switch", tt.body, tt.header...)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			m := decode(t, body)
			if code != http.StatusOK {
				if msg, _ := m["message"].(string); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message %q, want it to contain %q", msg, tt.wantMsg)
				}
				return
			}
			if got := at(t, m, "report", "to"); got != "target" {
				t.Errorf("report.to = %v", got)
			}
			if got := at(t, m, "report", "duration"); got != "0.250s" {
				t.Errorf("report.duration = %v", got)
			}
			if got := at(t, m, "report", "fetchesAnsweredEarly"); got != "2" {
				t.Errorf("report.fetchesAnsweredEarly = %v", got)
			}
			fp.set(func(f *fakeProxy) {
				if !slices.Equal(f.switched, []string{"target"}) {
					t.Errorf("proxy saw switches %v", f.switched)
				}
			})
		})
	}
}

func TestRESTGates(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		gateErr  error
		wantCode int
		wantGate proxy.Gate
		wantMsg  string
	}{
		{name: "reject", body: `{"apiKeys":[0],"mode":"REJECT"}`, wantCode: http.StatusOK, wantGate: proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateReject}},
		{name: "hold lower case", body: `{"apiKeys":[0,1,8],"mode":"hold"}`, wantCode: http.StatusOK, wantGate: proxy.Gate{APIKeys: []int16{0, 1, 8}, Mode: proxy.GateHold}},
		{name: "snake case accepted", body: `{"api_keys":[1],"mode":"Reject"}`, wantCode: http.StatusOK, wantGate: proxy.Gate{APIKeys: []int16{1}, Mode: proxy.GateReject}},
		{name: "unknown mode", body: `{"apiKeys":[0],"mode":"STOP"}`, wantCode: http.StatusBadRequest, wantMsg: "want REJECT or HOLD"},
		{name: "no mode", body: `{"apiKeys":[0]}`, wantCode: http.StatusBadRequest, wantMsg: "invalid gate"},
		{name: "no keys", body: `{"apiKeys":[],"mode":"REJECT"}`, wantCode: http.StatusBadRequest, wantMsg: "no API keys"},
		{name: "key too large", body: `{"apiKeys":[40000],"mode":"REJECT"}`, wantCode: http.StatusBadRequest, wantMsg: "API key 40000 out of range"},
		{name: "negative key", body: `{"apiKeys":[-1],"mode":"REJECT"}`, wantCode: http.StatusBadRequest, wantMsg: "API key -1 out of range"},
		{name: "proxy refuses", body: `{"apiKeys":[999],"mode":"REJECT"}`, gateErr: fmt.Errorf("%w: API key 999", proxy.ErrInvalidGate), wantCode: http.StatusBadRequest, wantMsg: "API key 999"},
		{name: "proxy closed", body: `{"apiKeys":[0],"mode":"REJECT"}`, gateErr: proxy.ErrClosed, wantCode: http.StatusServiceUnavailable},
		{name: "body too large", body: `{"apiKeys":[0],"mode":"REJECT","x":"` + strings.Repeat("a", 2<<20) + `"}`, wantCode: http.StatusBadRequest, wantMsg: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy()
			fp.gateErr = tt.gateErr
			ts := start(t, fp, nil, defaultTestConfig())
			code, body := do(t, http.MethodPut, ts.base+"/v1/gates", tt.body)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			m := decode(t, body)
			if code != http.StatusOK {
				if msg, _ := m["message"].(string); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message %q, want it to contain %q", msg, tt.wantMsg)
				}
				fp.set(func(f *fakeProxy) {
					if f.gateSet {
						t.Errorf("gate set to %+v despite the error", f.gate)
					}
				})
				return
			}
			if got, want := at(t, m, "gate", "mode"), tt.wantGate.Mode.String(); got != want {
				t.Errorf("gate.mode = %v, want %v", got, want)
			}
			fp.set(func(f *fakeProxy) {
				if !slices.Equal(f.gate.APIKeys, tt.wantGate.APIKeys) || f.gate.Mode != tt.wantGate.Mode {
					t.Errorf("proxy gate %+v, want %+v", f.gate, tt.wantGate)
				}
			})

			code, body = do(t, http.MethodDelete, ts.base+"/v1/gates", "")
			if code != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
				t.Fatalf("DELETE /v1/gates: %d %s", code, body)
			}
			fp.set(func(f *fakeProxy) {
				if f.gateSet {
					t.Errorf("gate still set after DELETE: %+v", f.gate)
				}
			})
		})
	}
}

func TestHTTPEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_admin_test_total", Help: "A test counter."})
	reg.MustRegister(ctr)
	ctr.Add(3)
	fp := newFakeProxy()
	ts := start(t, fp, reg, defaultTestConfig())

	tests := []struct {
		name     string
		method   string
		path     string
		readyErr error
		wantCode int
		wantBody string
	}{
		{name: "healthz", method: http.MethodGet, path: "/healthz", wantCode: http.StatusOK, wantBody: "ok"},
		{name: "healthz while not ready", method: http.MethodGet, path: "/healthz", readyErr: errors.New("no upstream"), wantCode: http.StatusOK, wantBody: "ok"},
		{name: "readyz ready", method: http.MethodGet, path: "/readyz", wantCode: http.StatusOK, wantBody: "ok"},
		{name: "readyz not ready", method: http.MethodGet, path: "/readyz", readyErr: fmt.Errorf("cluster source: %w", proxy.ErrUnreachable), wantCode: http.StatusServiceUnavailable, wantBody: "not ready: cluster source: cluster unreachable"},
		{name: "metrics", method: http.MethodGet, path: "/metrics", wantCode: http.StatusOK, wantBody: "switchyard_admin_test_total 3"},
		{name: "unknown path", method: http.MethodGet, path: "/v1/nothing", wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp.set(func(f *fakeProxy) { f.readyErr = tt.readyErr })
			code, body := do(t, tt.method, ts.base+tt.path, "")
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body %q, want it to contain %q", body, tt.wantBody)
			}
		})
	}

	t.Run("openapi", func(t *testing.T) {
		code, body := do(t, http.MethodGet, ts.base+"/v1/openapi.json", "")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		var doc struct {
			Swagger string                    `json:"swagger"`
			Paths   map[string]map[string]any `json:"paths"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("openapi.json is not JSON: %v", err)
		}
		if doc.Swagger != "2.0" {
			t.Errorf("swagger = %q, want 2.0", doc.Swagger)
		}
		for _, op := range []struct{ path, method string }{
			{"/v1/status", "get"},
			{"/v1/switch", "post"},
			{"/v1/gates", "put"},
			{"/v1/gates", "delete"},
		} {
			if _, ok := doc.Paths[op.path][op.method]; !ok {
				t.Errorf("openapi.json has no %s %s", op.method, op.path)
			}
		}
	})
}

func TestGRPC(t *testing.T) {
	fp := newFakeProxy()
	fp.status = richStatus()
	ts := start(t, fp, nil, defaultTestConfig())
	client := switchyardv1.NewProxyAdminServiceClient(dialGRPC(t, ts.addr))
	ctx := t.Context()

	t.Run("status", func(t *testing.T) {
		resp, err := client.GetStatus(ctx, &switchyardv1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("GetStatus: %v", err)
		}
		st := resp.GetStatus()
		if st.GetActiveCluster() != "target" || st.GetConnections() != 3 || st.GetGate().GetMode() != "HOLD" ||
			!slices.Equal(st.GetGate().GetApiKeys(), []int32{0, 8}) ||
			st.GetLastSwitch().GetDuration().AsDuration() != 1500*time.Millisecond ||
			len(st.GetBrokers()) != 2 || st.GetClusters()[1].GetLastError() != "boom" {
			t.Errorf("GetStatus = %v", st)
		}
	})

	t.Run("switch", func(t *testing.T) {
		resp, err := client.Switch(ctx, &switchyardv1.SwitchRequest{Cluster: "target"})
		if err != nil {
			t.Fatalf("Switch: %v", err)
		}
		if r := resp.GetReport(); r.GetTo() != "target" || r.GetDrained() != 7 || r.GetDuration().AsDuration() != 250*time.Millisecond {
			t.Errorf("report = %v", r)
		}
	})

	t.Run("gates", func(t *testing.T) {
		resp, err := client.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "hold",
			HoldBudget: durationpb.New(1500 * time.Millisecond)})
		if err != nil {
			t.Fatalf("SetGates: %v", err)
		}
		if resp.GetGate().GetMode() != "HOLD" || resp.GetGate().GetHoldBudget().AsDuration() != 1500*time.Millisecond {
			t.Errorf("gate = %v", resp.GetGate())
		}
		fp.set(func(f *fakeProxy) {
			if f.gate.HoldBudget != 1500*time.Millisecond {
				t.Errorf("proxy gate hold budget %v, want 1.5s", f.gate.HoldBudget)
			}
		})
		// Per-key modes: Produce held, Fetch refused, and Fetch let
		// through while a transaction is open.
		resp, err = client.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0, 1}, Mode: "HOLD",
			RejectApiKeys: []int32{1}, FetchWaitsForTransactions: true})
		if err != nil {
			t.Fatalf("SetGates with reject keys: %v", err)
		}
		if g := resp.GetGate(); !slices.Equal(g.GetApiKeys(), []int32{0}) || g.GetMode() != "HOLD" ||
			!slices.Equal(g.GetRejectApiKeys(), []int32{1}) || !g.GetFetchWaitsForTransactions() {
			t.Errorf("gate = %v, want Produce held and Fetch refused (canonical: a key in both lists is refused)", g)
		}
		fp.set(func(f *fakeProxy) {
			if m, _ := f.gate.ModeFor(1); m != proxy.GateReject || !f.gate.FetchWaitsForTransactions {
				t.Errorf("proxy gate %+v, want Fetch refused while no transaction is open", f.gate)
			}
		})
		resp, err = client.SetGates(ctx, &switchyardv1.SetGatesRequest{RejectApiKeys: []int32{1}})
		if err != nil {
			t.Fatalf("SetGates with reject keys alone: %v", err)
		}
		if g := resp.GetGate(); !slices.Equal(g.GetApiKeys(), []int32{1}) || g.GetMode() != "REJECT" || len(g.GetRejectApiKeys()) != 0 {
			t.Errorf("gate = %v, want a REJECT gate of Fetch", g)
		}
		if _, err := client.ClearGates(ctx, &switchyardv1.ClearGatesRequest{}); err != nil {
			t.Fatalf("ClearGates: %v", err)
		}
		fp.set(func(f *fakeProxy) {
			if f.gateSet {
				t.Errorf("gate still set: %+v", f.gate)
			}
		})
	})

	t.Run("health", func(t *testing.T) {
		hc := healthpb.NewHealthClient(dialGRPC(t, ts.addr))
		for _, svc := range []string{"", switchyardv1.ProxyAdminService_ServiceDesc.ServiceName} {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("Check(%q): %v", svc, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check(%q) = %v", svc, resp.GetStatus())
			}
		}
	})
}

func TestGRPCErrors(t *testing.T) {
	tests := []struct {
		name      string
		switchErr error
		gateErr   error
		call      func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error
		want      codes.Code
	}{
		{
			name: "switch no cluster",
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				_, err := c.Switch(ctx, &switchyardv1.SwitchRequest{})
				return err
			},
			want: codes.InvalidArgument,
		},
		{
			name:      "switch unknown cluster",
			switchErr: proxy.ErrUnknownCluster,
			call:      switchTo("nowhere"),
			want:      codes.NotFound,
		},
		{
			name:      "switch in progress",
			switchErr: fmt.Errorf("switch: %w", proxy.ErrSwitchInProgress),
			call:      switchTo("target"),
			want:      codes.Aborted,
		},
		{
			name:      "switch closed",
			switchErr: proxy.ErrClosed,
			call:      switchTo("target"),
			want:      codes.Unavailable,
		},
		{
			name:      "switch internal",
			switchErr: errors.New("boom"),
			call:      switchTo("target"),
			want:      codes.Internal,
		},
		{
			name: "switch deadline",
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				_, err := c.Switch(ctx, &switchyardv1.SwitchRequest{Cluster: "slow"})
				return err
			},
			want: codes.DeadlineExceeded,
		},
		{
			name: "gate negative hold budget",
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				_, err := c.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "HOLD",
					HoldBudget: &durationpb.Duration{Seconds: 1, Nanos: -5}})
				return err
			},
			want: codes.InvalidArgument,
		},
		{
			name: "gate reject key out of range",
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				_, err := c.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "HOLD", RejectApiKeys: []int32{1 << 16}})
				return err
			},
			want: codes.InvalidArgument,
		},
		{
			name: "gate bad mode",
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				_, err := c.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "drop"})
				return err
			},
			want: codes.InvalidArgument,
		},
		{
			name:    "gate refused by proxy",
			gateErr: proxy.ErrInvalidGate,
			call: func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
				_, err := c.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "REJECT"})
				return err
			},
			want: codes.InvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy()
			fp.switchErr, fp.gateErr = tt.switchErr, tt.gateErr
			ts := start(t, fp, nil, defaultTestConfig())
			client := switchyardv1.NewProxyAdminServiceClient(dialGRPC(t, ts.addr))
			err := tt.call(t.Context(), client)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func switchTo(cluster string) func(context.Context, switchyardv1.ProxyAdminServiceClient) error {
	return func(ctx context.Context, c switchyardv1.ProxyAdminServiceClient) error {
		_, err := c.Switch(ctx, &switchyardv1.SwitchRequest{Cluster: cluster})
		return err
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"unknown cluster wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", proxy.ErrUnknownCluster)), codes.NotFound},
		{"invalid gate", proxy.ErrInvalidGate, codes.InvalidArgument},
		{"in progress", proxy.ErrSwitchInProgress, codes.Aborted},
		{"closed", proxy.ErrClosed, codes.Unavailable},
		{"unreachable", proxy.ErrUnreachable, codes.Unavailable},
		{"deadline", fmt.Errorf("drain: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"canceled", context.Canceled, codes.Canceled},
		{"grpc status kept", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{"plain", errors.New("x"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := codeOf(tt.err); got != tt.want {
				t.Errorf("codeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if s, _ := status.FromError(toStatus(tt.err)); s.Message() != tt.err.Error() && tt.name != "grpc status kept" {
				t.Errorf("message %q, want %q", s.Message(), tt.err.Error())
			}
		})
	}
}

// TestGracefulShutdown: a Switch in flight when the context is cancelled
// completes and is answered, over REST and over gRPC; the listener closes at
// once; Serve returns only after the answer.
func TestGracefulShutdown(t *testing.T) {
	tests := []struct {
		name string
		call func(addr string) error
	}{
		{name: "rest", call: func(addr string) error {
			resp, err := http.Post("http://"+addr+"/v1/switch", "application/json", bytes.NewBufferString(`{"cluster":"target"}`))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}},
		{name: "grpc", call: func(addr string) error {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer cc.Close()
			_, err = switchyardv1.NewProxyAdminServiceClient(cc).Switch(context.Background(), &switchyardv1.SwitchRequest{Cluster: "target"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy()
			fp.block = true
			s, err := New(defaultTestConfig(), fp, prometheus.NewRegistry(), zaptest.NewLogger(t))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ln := mustListen(t)
			addr := ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln) }()

			answered := make(chan error, 1)
			go func() { answered <- tt.call(addr) }()
			<-fp.entered
			cancel()
			waitFor(t, "listener to close", func() bool {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return true
				}
				_ = c.Close()
				return false
			})
			select {
			case err := <-served:
				t.Fatalf("Serve returned %v while a call was in flight", err)
			default:
			}
			close(fp.release)
			if err := <-answered; err != nil {
				t.Fatalf("in-flight switch: %v", err)
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			if err := s.Serve(context.Background(), mustListen(t)); err == nil {
				t.Error("second Serve succeeded")
			}
		})
	}
}

// TestShutdownTimeout: a call that outlives ShutdownTimeout is cut off and
// Serve says so.
func TestShutdownTimeout(t *testing.T) {
	fp := newFakeProxy()
	fp.block = true
	cfg := defaultTestConfig()
	cfg.ShutdownTimeout = 10 * time.Millisecond
	s, err := New(cfg, fp, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	client := switchyardv1.NewProxyAdminServiceClient(dialGRPC(t, ln.Addr().String()))
	called := make(chan error, 1)
	go func() {
		_, err := client.Switch(context.Background(), &switchyardv1.SwitchRequest{Cluster: "target"})
		called <- err
	}()
	<-fp.entered
	cancel()
	if err := <-served; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v, want a deadline error", err)
	}
	if err := <-called; err == nil {
		t.Fatal("switch cut off by shutdown succeeded")
	}
}

func TestRunAndAddr(t *testing.T) {
	s, err := New(defaultTestConfig(), newFakeProxy(), prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if s.Addr() != nil {
		t.Fatalf("Addr before Run = %v", s.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	waitFor(t, "Addr", func() bool { return s.Addr() != nil })
	if code, _ := do(t, http.MethodGet, "http://"+s.Addr().String()+"/healthz", ""); code != http.StatusOK {
		t.Errorf("healthz: %d", code)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "default", mutate: func(*Config) {}},
		{name: "ephemeral port", mutate: func(c *Config) { c.Listen = "127.0.0.1:0" }},
		{name: "localhost", mutate: func(c *Config) { c.Listen = "localhost:9190" }},
		{name: "ipv6 loopback", mutate: func(c *Config) { c.Listen = "[::1]:9190" }},
		// The API can gate and switch the proxy: beyond loopback it needs
		// a credential.
		{name: "any interface without credentials", mutate: func(c *Config) { c.Listen = ":9190" },
			wantErr: "listen: :9190 is not a loopback address, and neither a token nor a client CA (tls.caFile) is configured"},
		{name: "0.0.0.0 without credentials", mutate: func(c *Config) { c.Listen = "0.0.0.0:9190" }, wantErr: "not a loopback address"},
		{name: "pod address without credentials", mutate: func(c *Config) { c.Listen = "10.1.2.3:9190" }, wantErr: "not a loopback address"},
		{name: "a name without credentials", mutate: func(c *Config) { c.Listen = "sidecar.example:9190" }, wantErr: "not a loopback address"},
		{name: "any interface with a token", mutate: func(c *Config) { c.Listen, c.Token = ":9190", "tok" }},
		{name: "token with white space", mutate: func(c *Config) { c.Token = "tok\n" }, wantErr: "token: leading or trailing white space"},
		{name: "client CA without a certificate", mutate: func(c *Config) { c.Listen, c.TLS.CAFile = ":9190", "/nonexistent/ca.pem" },
			wantErr: "tls.certFile, tls.keyFile: required"},
		{name: "client setting", mutate: func(c *Config) { c.TLS.InsecureSkipVerify = true }, wantErr: "tls.insecureSkipVerify: a client setting"},
		{name: "missing certificate file", mutate: func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem" },
			wantErr: "tls.certFile: open /nonexistent/c.pem"},
		{name: "health listener", mutate: func(c *Config) { c.HealthListen = "0.0.0.0:9191" }},
		{name: "health listener on the admin port", mutate: func(c *Config) { c.HealthListen = c.Listen }, wantErr: "healthListen: 127.0.0.1:9190 is also listen"},
		{name: "bad health listener", mutate: func(c *Config) { c.HealthListen = "9191" }, wantErr: "healthListen"},
		{name: "allowed host with a port", mutate: func(c *Config) { c.AllowedHosts = []string{"admin.example:9190"} }, wantErr: "allowedHosts[0]"},
		{name: "no port", mutate: func(c *Config) { c.Listen = "127.0.0.1" }, wantErr: "listen"},
		{name: "port out of range", mutate: func(c *Config) { c.Listen = "127.0.0.1:70000" }, wantErr: "out of range"},
		{name: "zero shutdown timeout", mutate: func(c *Config) { c.ShutdownTimeout = 0 }, wantErr: "shutdownTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
	if got := DefaultConfig().Listen; got != "127.0.0.1:9190" {
		t.Errorf("default listen %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	reg := prometheus.NewRegistry()
	tests := []struct {
		name string
		cfg  Config
		p    Proxy
		g    prometheus.Gatherer
	}{
		{name: "bad config", cfg: Config{}, p: newFakeProxy(), g: reg},
		{name: "nil proxy", cfg: DefaultConfig(), g: reg},
		{name: "nil gatherer", cfg: DefaultConfig(), p: newFakeProxy()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.p, tt.g, nil); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
