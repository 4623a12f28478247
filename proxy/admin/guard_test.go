package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/apiguard/apiguardtest"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
	"github.com/switchyard/switchyard/proxy"
)

// rawRequest sends one HTTP/1.1 request exactly as given: body, headers and
// Host (the Host header a browser would send), with no Content-Type added,
// and returns the status code and body.
func rawRequest(t *testing.T, method, url, body string, header map[string]string) (int, string) {
	t.Helper()
	code, b, major := apiguardtest.Do(t, method, url, body, header)
	if major != 1 {
		t.Errorf("%s %s: served over HTTP/%d, want HTTP/1.1", method, url, major)
	}
	return code, b
}

// TestBrowserRequestsRefused sends, over real HTTP to a running admin
// server on its default (loopback, no credentials) configuration, the
// requests a web page can make a browser send: a "simple" cross-origin POST
// (text/plain or form data, no preflight), a request with a foreign Origin,
// and a DNS-rebinding request whose Host is the attacker's name. None may
// switch or gate the proxy. The requests curl and switchyard's clients send
// still work.
func TestBrowserRequestsRefused(t *testing.T) {
	fp := newFakeProxy()
	ts := start(t, fp, nil, defaultTestConfig())
	_, port, _ := net.SplitHostPort(ts.addr)
	const switchBody = `{"cluster":"target"}`
	const gateBody = `{"apiKeys":[0],"mode":"REJECT"}`
	json := "application/json"

	tests := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		wantCode     int
		wantBody     string
		wantSwitched bool
		wantGate     bool
	}{
		// A web page's fetch(..., {mode: "no-cors"}) or <form>: no preflight.
		{name: "text/plain switch", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example"}, wantCode: 403},
		{name: "text/plain switch, origin stripped", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": "text/plain"}, wantCode: 415, wantBody: "application/json"},
		{name: "form gate", method: "PUT", path: "/v1/gates", body: gateBody,
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, wantCode: 415},
		{name: "multipart switch", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, wantCode: 415},
		{name: "switch without content type", method: "POST", path: "/v1/switch", body: switchBody, wantCode: 415},
		{name: "delete with a text body", method: "DELETE", path: "/v1/gates", body: "x",
			header: map[string]string{"Content-Type": "text/plain"}, wantCode: 415},
		// A page that got past the content type (a CORS request would be
		// preflighted and never allowed; an old browser might not).
		{name: "foreign origin switch", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Origin": "http://evil.example"}, wantCode: 403, wantBody: "origin"},
		{name: "null origin gate", method: "PUT", path: "/v1/gates", body: gateBody,
			header: map[string]string{"Content-Type": json, "Origin": "null"}, wantCode: 403},
		{name: "same site other port", method: "PUT", path: "/v1/gates", body: gateBody,
			header: map[string]string{"Content-Type": json, "Origin": "http://127.0.0.1:3000"}, wantCode: 403},
		{name: "https origin for an http server", method: "DELETE", path: "/v1/gates",
			header: map[string]string{"Origin": "https://" + ts.addr}, wantCode: 403},
		{name: "cross-site fetch metadata", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Sec-Fetch-Site": "cross-site"}, wantCode: 403},
		{name: "same-site fetch metadata", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Sec-Fetch-Site": "same-site"}, wantCode: 403},
		{name: "foreign origin reading status", method: "GET", path: "/v1/status",
			header: map[string]string{"Origin": "http://evil.example"}, wantCode: 403},
		// DNS rebinding: the page's own origin, resolved to 127.0.0.1.
		{name: "rebinding switch", method: "POST", path: "/v1/switch", body: switchBody,
			header:   map[string]string{"Content-Type": json, "Host": "rebind.evil.example:" + port, "Origin": "http://rebind.evil.example:" + port},
			wantCode: 403, wantBody: "DNS rebinding"},
		{name: "rebinding status read", method: "GET", path: "/v1/status",
			header: map[string]string{"Host": "rebind.evil.example:" + port}, wantCode: 403},
		{name: "rebinding metrics read", method: "GET", path: "/metrics",
			header: map[string]string{"Host": "rebind.evil.example"}, wantCode: 403},
		{name: "localhost-looking name", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Host": "localhost.evil.example:" + port}, wantCode: 403},

		// What curl, scripts and switchyard's clients send.
		{name: "curl --json switch", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Accept": json}, wantCode: 200, wantSwitched: true},
		{name: "json with charset", method: "PUT", path: "/v1/gates", body: gateBody,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}, wantCode: 200, wantGate: true},
		{name: "curl -X DELETE", method: "DELETE", path: "/v1/gates", wantCode: 200},
		{name: "curl status", method: "GET", path: "/v1/status", wantCode: 200},
		{name: "localhost host", method: "POST", path: "/v1/switch", body: switchBody,
			header: map[string]string{"Content-Type": json, "Host": "localhost:" + port}, wantCode: 200, wantSwitched: true},
		{name: "port-forward host", method: "GET", path: "/v1/status", header: map[string]string{"Host": "LOCALHOST"}, wantCode: 200},
		{name: "ipv6 loopback host", method: "GET", path: "/v1/status", header: map[string]string{"Host": "[::1]:" + port}, wantCode: 200},
		{name: "same origin", method: "PUT", path: "/v1/gates", body: gateBody,
			header: map[string]string{"Content-Type": json, "Origin": "http://" + ts.addr, "Sec-Fetch-Site": "same-origin"}, wantCode: 200, wantGate: true},
		{name: "probe from the pod address", method: "GET", path: "/readyz", header: map[string]string{"Host": "10.1.2.3:" + port}, wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp.set(func(f *fakeProxy) { f.switched, f.gate, f.gateSet = nil, proxy.Gate{}, false })
			code, body := rawRequest(t, tt.method, ts.base+tt.path, tt.body, tt.header)
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("%s %s: %d %s, want %d with %q", tt.method, tt.path, code, body, tt.wantCode, tt.wantBody)
			}
			fp.set(func(f *fakeProxy) {
				if switched := len(f.switched) > 0; switched != tt.wantSwitched {
					t.Errorf("proxy switched: %v, want %v", f.switched, tt.wantSwitched)
				}
				if f.gateSet != tt.wantGate {
					t.Errorf("gate set: %v (%+v), want %v", f.gateSet, f.gate, tt.wantGate)
				}
			})
		})
	}
}

// TestGRPCBrowserRulesAndAllowedHosts: the Host and Origin rules hold for
// gRPC calls too, and AllowedHosts (or the listen address's name) admits
// the names remote callers dial by.
func TestGRPCBrowserRulesAndAllowedHosts(t *testing.T) {
	fp := newFakeProxy()
	cfg := defaultTestConfig()
	cfg.AllowedHosts = []string{"Sidecar-Admin.example"}
	ts := start(t, fp, nil, cfg)
	_, port, _ := net.SplitHostPort(ts.addr)

	dial := func(authority string) switchyardv1.ProxyAdminServiceClient {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if authority != "" {
			opts = append(opts, grpc.WithAuthority(authority))
		}
		conn, err := grpc.NewClient("passthrough:///"+ts.addr, opts...)
		if err != nil {
			t.Fatalf("grpc.NewClient: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		return switchyardv1.NewProxyAdminServiceClient(conn)
	}
	origin := func(o string) context.Context {
		return metadata.AppendToOutgoingContext(t.Context(), "origin", o)
	}
	tests := []struct {
		name      string
		authority string
		ctx       context.Context
		want      codes.Code
	}{
		{name: "rebinding authority", authority: "rebind.evil.example:" + port, want: codes.PermissionDenied},
		{name: "foreign origin", ctx: origin("http://evil.example"), want: codes.PermissionDenied},
		{name: "plain grpc client", want: codes.OK},
		{name: "allowed host", authority: "sidecar-admin.example:" + port, want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp.set(func(f *fakeProxy) { f.switched = nil })
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			_, err := dial(tt.authority).Switch(ctx, &switchyardv1.SwitchRequest{Cluster: "target"})
			if status.Code(err) != tt.want {
				t.Fatalf("Switch: %v, want code %v", err, tt.want)
			}
			fp.set(func(f *fakeProxy) {
				if switched := len(f.switched) > 0; switched != (tt.want == codes.OK) {
					t.Errorf("proxy switched: %v", f.switched)
				}
			})
		})
	}
	t.Run("allowed host over REST", func(t *testing.T) {
		code, body := rawRequest(t, "GET", ts.base+"/v1/status", "", map[string]string{"Host": "sidecar-admin.example:" + port})
		if code != 200 {
			t.Errorf("GET /v1/status with an allowed host: %d %s", code, body)
		}
	})
}

// TestTokenAuth: with a token, an admin API beyond loopback is allowed, and
// every ProxyAdminService call needs the token, over REST and gRPC; health,
// metrics and the OpenAPI document do not.
func TestTokenAuth(t *testing.T) {
	fp := newFakeProxy()
	cfg := defaultTestConfig()
	cfg.Listen = "0.0.0.0:0" // refused without a credential, see TestConfigValidate
	cfg.Token = "s3cret-admin-token"
	ts := start(t, fp, nil, cfg)
	bearer := map[string]string{"Authorization": "Bearer s3cret-admin-token", "Content-Type": "application/json"}

	rest := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		want         int
	}{
		{name: "switch without a token", method: "POST", path: "/v1/switch", body: `{"cluster":"target"}`,
			header: map[string]string{"Content-Type": "application/json"}, want: 401},
		{name: "switch with a wrong token", method: "POST", path: "/v1/switch", body: `{"cluster":"target"}`,
			header: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer guess"}, want: 401},
		{name: "switch with basic auth", method: "POST", path: "/v1/switch", body: `{"cluster":"target"}`,
			header: map[string]string{"Content-Type": "application/json", "Authorization": "Basic czNjcmV0"}, want: 401},
		{name: "gate without a token", method: "PUT", path: "/v1/gates", body: `{"apiKeys":[0]}`,
			header: map[string]string{"Content-Type": "application/json"}, want: 401},
		{name: "clear gate without a token", method: "DELETE", path: "/v1/gates", want: 401},
		{name: "status without a token", method: "GET", path: "/v1/status", want: 401},
		{name: "healthz without a token", method: "GET", path: "/healthz", want: 200},
		{name: "readyz without a token", method: "GET", path: "/readyz", want: 200},
		{name: "metrics without a token", method: "GET", path: "/metrics", want: 200},
		{name: "openapi without a token", method: "GET", path: "/v1/openapi.json", want: 200},
		{name: "status with the token", method: "GET", path: "/v1/status", header: bearer, want: 200},
		{name: "gate with the token", method: "PUT", path: "/v1/gates", body: `{"apiKeys":[0],"mode":"HOLD"}`, header: bearer, want: 200},
		{name: "switch with the token", method: "POST", path: "/v1/switch", body: `{"cluster":"target"}`, header: bearer, want: 200},
	}
	for _, tt := range rest {
		t.Run("REST "+tt.name, func(t *testing.T) {
			code, body := rawRequest(t, tt.method, ts.base+tt.path, tt.body, tt.header)
			if code != tt.want {
				t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
			if code == 401 && strings.Contains(body, "s3cret") {
				t.Errorf("refusal shows the token: %s", body)
			}
		})
	}
	fp.set(func(f *fakeProxy) {
		if len(f.switched) != 1 {
			t.Errorf("switched %v, want only the authenticated switch", f.switched)
		}
	})

	client := switchyardv1.NewProxyAdminServiceClient(dialGRPC(t, ts.addr))
	withToken := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	}
	grpcCalls := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{name: "no token", ctx: t.Context(), want: codes.Unauthenticated},
		{name: "wrong token", ctx: withToken("guess"), want: codes.Unauthenticated},
		{name: "the token", ctx: withToken("s3cret-admin-token"), want: codes.OK},
	}
	for _, tt := range grpcCalls {
		t.Run("gRPC "+tt.name, func(t *testing.T) {
			fp.set(func(f *fakeProxy) { f.switched, f.gateSet = nil, false })
			_, serr := client.Switch(tt.ctx, &switchyardv1.SwitchRequest{Cluster: "target"})
			_, gerr := client.SetGates(tt.ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "REJECT"})
			_, cerr := client.ClearGates(tt.ctx, &switchyardv1.ClearGatesRequest{})
			_, sterr := client.GetStatus(tt.ctx, &switchyardv1.GetStatusRequest{})
			for _, err := range []error{serr, gerr, cerr, sterr} {
				if status.Code(err) != tt.want {
					t.Errorf("call: %v, want code %v", err, tt.want)
				}
			}
			fp.set(func(f *fakeProxy) {
				if (len(f.switched) > 0) != (tt.want == codes.OK) {
					t.Errorf("switched %v", f.switched)
				}
			})
		})
	}
	t.Run("gRPC health without a token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(dialGRPC(t, ts.addr)).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check: %v, %v", resp, err)
		}
	})
}

// adminPKI is a CA, the admin server's certificate and a client's.
type adminPKI struct {
	server, client, stranger tlstest.Paths
}

func newAdminPKI(t *testing.T) adminPKI {
	t.Helper()
	ca := tlstest.NewCA(t, "admin-ca")
	other := tlstest.NewCA(t, "other-ca")
	return adminPKI{
		server:   tlstest.Write(t, t.TempDir(), ca, ca.Localhost(t)),
		client:   tlstest.Write(t, t.TempDir(), ca, ca.Issue(t, tlstest.Leaf{CommonName: "operator", Client: true})),
		stranger: tlstest.Write(t, t.TempDir(), other, other.Issue(t, tlstest.Leaf{CommonName: "operator", Client: true})),
	}
}

// tlsClient is an HTTP client trusting the admin CA, presenting cert (a
// zero Paths: none).
func tlsClient(t *testing.T, pki adminPKI, cert tlstest.Paths) (*http.Client, *tls.Config) {
	t.Helper()
	cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: pki.server.CA, CertFile: cert.Cert, KeyFile: cert.Key, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}, cfg
}

// TestMTLS: with a client CA and no token, the TLS handshake requires a
// certificate from that CA; with a token as well, either credential will
// do. Over REST and gRPC.
func TestMTLS(t *testing.T) {
	pki := newAdminPKI(t)
	post := func(c *http.Client, base string, header map[string]string) (int, error) {
		req, _ := http.NewRequest("POST", base+"/v1/switch", strings.NewReader(`{"cluster":"target"}`))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	t.Run("client CA only", func(t *testing.T) {
		fp := newFakeProxy()
		cfg := defaultTestConfig()
		cfg.Listen = "0.0.0.0:0"
		cfg.TLS = tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key, CAFile: pki.server.CA}
		ts := start(t, fp, nil, cfg)
		base := "https://" + ts.addr

		anon, _ := tlsClient(t, pki, tlstest.Paths{})
		if code, err := post(anon, base, nil); err == nil {
			t.Errorf("switch without a client certificate: %d, want a failed handshake", code)
		}
		stranger, _ := tlsClient(t, pki, pki.stranger)
		if code, err := post(stranger, base, nil); err == nil {
			t.Errorf("switch with another CA's certificate: %d, want a failed handshake", code)
		}
		plain := &http.Client{}
		if code, err := post(plain, "http://"+ts.addr, nil); err == nil && code == 200 {
			t.Errorf("switch over plaintext: %d", code)
		}
		fp.set(func(f *fakeProxy) {
			if len(f.switched) != 0 {
				t.Errorf("switched %v without a certificate", f.switched)
			}
		})
		ok, clientTLS := tlsClient(t, pki, pki.client)
		if code, err := post(ok, base, nil); err != nil || code != 200 {
			t.Errorf("switch with a client certificate: %d, %v", code, err)
		}
		// The same over gRPC.
		conn, err := grpc.NewClient("passthrough:///"+ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := switchyardv1.NewProxyAdminServiceClient(conn).SetGates(t.Context(),
			&switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "HOLD"}); err != nil {
			t.Errorf("gRPC SetGates with a client certificate: %v", err)
		}
		_, anonTLS := tlsClient(t, pki, tlstest.Paths{})
		conn2, err := grpc.NewClient("passthrough:///"+ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(anonTLS)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		if _, err := switchyardv1.NewProxyAdminServiceClient(conn2).ClearGates(t.Context(), &switchyardv1.ClearGatesRequest{}); err == nil {
			t.Error("gRPC ClearGates without a client certificate succeeded")
		}
	})

	t.Run("client CA and token", func(t *testing.T) {
		fp := newFakeProxy()
		cfg := defaultTestConfig()
		cfg.TLS = tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key, CAFile: pki.server.CA}
		cfg.Token = "tok"
		ts := start(t, fp, nil, cfg)
		base := "https://" + ts.addr
		anon, _ := tlsClient(t, pki, tlstest.Paths{})
		withCert, _ := tlsClient(t, pki, pki.client)
		for _, tc := range []struct {
			name   string
			client *http.Client
			header map[string]string
			want   int
		}{
			{name: "neither", client: anon, want: 401},
			{name: "token", client: anon, header: map[string]string{"Authorization": "Bearer tok"}, want: 200},
			{name: "certificate", client: withCert, want: 200},
			{name: "certificate and a wrong token", client: withCert, header: map[string]string{"Authorization": "Bearer guess"}, want: 401},
		} {
			if code, err := post(tc.client, base, tc.header); err != nil || code != tc.want {
				t.Errorf("%s: %d, %v, want %d", tc.name, code, err, tc.want)
			}
		}
	})
}

// TestHealthListener: the health listener serves GET /healthz, /readyz and
// /metrics without credentials, and nothing that reads or changes the
// proxy; Run serves it beside the admin API.
func TestHealthListener(t *testing.T) {
	fp := newFakeProxy()
	cfg := defaultTestConfig()
	cfg.Token = "tok"
	cfg.HealthListen = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_health_test_total", Help: "A test counter."}))
	s, err := New(cfg, fp, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	waitFor(t, "both listeners", func() bool { return s.Addr() != nil && s.HealthAddr() != nil })
	base := "http://" + s.HealthAddr().String()

	// The reason can carry broker addresses: not on the health port
	// (found by review), only on the admin API.
	fp.set(func(f *fakeProxy) { f.readyErr = errors.New("no upstream yet: dial b-1.internal:9092") })
	for _, tc := range []struct {
		method, path, body string
		want               int
		wantBody           string
	}{
		{method: "GET", path: "/healthz", want: 200, wantBody: "ok"},
		{method: "HEAD", path: "/healthz", want: 200},
		{method: "GET", path: "/readyz", want: 503, wantBody: "not ready (the admin API's /readyz and /v1/status say why)"},
		{method: "GET", path: "/metrics", want: 200, wantBody: "switchyard_health_test_total 0"},
		{method: "GET", path: "/v1/status", want: 404},
		{method: "GET", path: "/v1/openapi.json", want: 404},
		{method: "POST", path: "/v1/switch", body: `{"cluster":"target"}`, want: 404},
		{method: "PUT", path: "/v1/gates", body: `{"apiKeys":[0]}`, want: 404},
		{method: "DELETE", path: "/v1/gates", want: 404},
		{method: "POST", path: "/healthz", want: 405},
	} {
		code, body := rawRequest(t, tc.method, base+tc.path, tc.body, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer tok"})
		if code != tc.want || !strings.Contains(body, tc.wantBody) || strings.Contains(body, "b-1.internal") {
			t.Errorf("%s %s on the health listener: %d %q, want %d with %q", tc.method, tc.path, code, body, tc.want, tc.wantBody)
		}
	}
	if code, body := rawRequest(t, "GET", "http://"+s.Addr().String()+"/readyz", "", nil); code != 503 || !strings.Contains(body, "b-1.internal") {
		t.Errorf("/readyz on the admin API: %d %q, want the reason", code, body)
	}
	fp.set(func(f *fakeProxy) {
		if len(f.switched) > 0 || f.gateSet {
			t.Errorf("the health listener reached the proxy: switched %v, gate %v", f.switched, f.gateSet)
		}
	})
	// gRPC is not served there either.
	conn, err := grpc.NewClient("passthrough:///"+s.HealthAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := switchyardv1.NewProxyAdminServiceClient(conn).Switch(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer tok"),
		&switchyardv1.SwitchRequest{Cluster: "target"}); err == nil {
		t.Error("gRPC Switch on the health listener succeeded")
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
