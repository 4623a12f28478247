package control

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

// Secrets of the secure test plane: distinctive, so a leak is found by a
// plain substring search.
const (
	legacySecret     = "legacy-6b0f3e9a51c7"
	opsSecret        = "ops-93c1d7a2e48f"
	dashboardsSecret = "dash-0a7e5c3b9d21"
	sidecarsSecret   = "side-5d2f8b1e7c64"
	shopSecret       = "shop-7e1a90c3d5b2"
)

// securePlane is a control plane serving TLS with an optional client CA,
// named tokens of each role and client certificate identities.
type securePlane struct {
	*plane
	pki       securePKI
	auditFile string
	logs      *observer.ObservedLogs
}

// securePKI is the certificate material of a secure plane's tests.
type securePKI struct {
	dir     string
	ca      *tlstest.CA
	server  tlstest.Paths // server pair, and the CA clients trust and client certificates chain to
	alice   tlstest.Paths // CN alice: operator
	orders  tlstest.Paths // URI spiffe://test/ns/shop/sa/orders: sidecar
	mallory tlstest.Paths // CN mallory: no role
	other   tlstest.Paths // CN alice, from another CA
	pod1    tlstest.Paths // CN shop/orders-1, URI spiffe://test/pods/shop/orders-1: sidecar of orders, bound to its instance
}

func newPKI(t *testing.T) securePKI {
	t.Helper()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "control-ca")
	other := tlstest.NewCA(t, "other-ca")
	sub := func(name string, ca *tlstest.CA, is tlstest.Issued) tlstest.Paths {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return tlstest.Write(t, d, ca, is)
	}
	return securePKI{
		dir:     dir,
		ca:      ca,
		server:  sub("server", ca, ca.Localhost(t)),
		alice:   sub("alice", ca, ca.Issue(t, tlstest.Leaf{CommonName: "alice", Client: true})),
		orders:  sub("orders", ca, ca.Issue(t, tlstest.Leaf{CommonName: "orders", URIs: []string{"spiffe://test/ns/shop/sa/orders"}, Client: true})),
		mallory: sub("mallory", ca, ca.Issue(t, tlstest.Leaf{CommonName: "mallory", Client: true})),
		other:   sub("other", other, other.Issue(t, tlstest.Leaf{CommonName: "alice", Client: true})),
		pod1: sub("pod1", ca, ca.Issue(t, tlstest.Leaf{CommonName: "shop/orders-1", URIs: []string{"spiffe://test/pods/shop/orders-1"},
			Client: true})),
	}
}

func secureConfig(pki securePKI, auditFile string) ServerConfig {
	return ServerConfig{
		Listen: "127.0.0.1:0",
		Token:  legacySecret,
		Tokens: []Token{
			{Name: "ops", Role: RoleOperator, Value: opsSecret},
			{Name: "dashboards", Role: RoleReadOnly, Value: dashboardsSecret},
			{Name: "sidecars", Role: RoleSidecar, Value: sidecarsSecret, Apps: []string{"probe", "pay*"}},
			{Name: "shop", Role: RoleSidecar, Value: shopSecret, Apps: []string{"orders"}, Instances: []string{"shop/*"}},
		},
		ClientCertificates: []ClientCertificate{
			{Identity: "alice", Role: RoleOperator},
			{Identity: "spiffe://test/ns/shop/*", Role: RoleSidecar, Apps: []string{"probe"}},
			{Identity: "spiffe://test/pods/*", Role: RoleSidecar, Apps: []string{"orders"}, BindInstance: true},
		},
		ReadAuth:           true,
		TLS:                tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key, CAFile: pki.server.CA},
		ClientCertOptional: true,
		AuditFile:          auditFile,
	}
}

// startSecurePlane runs a control plane with cfg; its plane.conn is an
// operator's connection (token "ops", no certificate), for the fake
// sidecars of control_test.go.
func startSecurePlane(t *testing.T, cfg ServerConfig, pki securePKI) *securePlane {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	dir := t.TempDir()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(store, log)
	if err != nil {
		t.Fatal(err)
	}
	fm := &fakeMirror{ready: true, caughtUp: true}
	refs := []*MirrorRef{{Name: "m", Source: "source", Target: "target", Mirror: fm}}
	ct := NewController(reg, store, testClusters, refs, log)
	metricsReg := prometheus.NewRegistry()
	if err := ct.Instrument(metricsReg); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(cfg, ct, reg, testClusters, refs, metricsReg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &plane{t: t, dir: dir, token: opsSecret, mirror: fm, ct: ct, reg: reg, done: make(chan error, 1), cancel: cancel}
	if err := ct.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := srv.Serve(ctx, ln)
		ct.Wait()
		p.done <- err
	}()
	p.addr = ln.Addr().String()
	sp := &securePlane{plane: p, pki: pki, auditFile: cfg.AuditFile, logs: logs}
	p.conn = sp.dial(t, tlstest.Paths{}, "")
	p.client = switchyardv1.NewControlServiceClient(p.conn)
	t.Cleanup(p.stop)
	return sp
}

// dial connects over TLS, trusting the plane's CA, with the client
// certificate in cert (none when empty) and the token (none when empty).
func (sp *securePlane) dial(t *testing.T, cert tlstest.Paths, token string) *grpc.ClientConn {
	t.Helper()
	cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: sp.pki.server.CA, CertFile: cert.Cert, KeyFile: cert.Key}.ForAddr(sp.addr))
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(testBearer(token)))
	}
	conn, err := grpc.NewClient(sp.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpClient is a REST client over TLS with the client certificate in
// cert (none when empty).
func (sp *securePlane) httpClient(t *testing.T, cert tlstest.Paths) *http.Client {
	t.Helper()
	cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: sp.pki.server.CA, CertFile: cert.Cert, KeyFile: cert.Key}.ForAddr(sp.addr))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type testBearer string

func (b testBearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (testBearer) RequireTransportSecurity() bool { return true }

// connectOnce opens SidecarService.Connect, announces a sidecar and
// returns the error of the first Recv: nil when the plane accepted it.
func connectOnce(conn *grpc.ClientConn, instance string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := switchyardv1.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	_ = stream.Send(&switchyardv1.ConnectRequest{Identity: &switchyardv1.SidecarIdentity{App: "probe", Instance: instance},
		Status: &switchyardv1.ProxyStatus{ActiveCluster: "source"}})
	_, err = stream.Recv()
	return err
}

// TestRolesOverGRPC calls every kind of method as every kind of caller.
func TestRolesOverGRPC(t *testing.T) {
	pki := newPKI(t)
	sp := startSecurePlane(t, secureConfig(pki, filepath.Join(t.TempDir(), "audit.jsonl")), pki)
	none := tlstest.Paths{}
	type want struct {
		read, operate, connect codes.Code
	}
	// An operator's calls get past auth and fail on their own terms:
	// abort of an unknown cutover is NotFound.
	for _, tc := range []struct {
		name  string
		cert  tlstest.Paths
		token string
		want  want
		msg   string // in the PermissionDenied message of operate
	}{
		{"anonymous", none, "", want{codes.Unauthenticated, codes.Unauthenticated, codes.Unauthenticated}, ""},
		{"wrong token", none, "nope", want{codes.Unauthenticated, codes.Unauthenticated, codes.Unauthenticated}, ""},
		{"legacy token is operator", none, legacySecret, want{codes.OK, codes.NotFound, codes.OK}, ""},
		{"operator token", none, opsSecret, want{codes.OK, codes.NotFound, codes.OK}, ""},
		{"read-only token", none, dashboardsSecret, want{codes.OK, codes.PermissionDenied, codes.PermissionDenied},
			"AbortCutover needs role operator; token dashboards has role read-only"},
		{"sidecar token", none, sidecarsSecret, want{codes.PermissionDenied, codes.PermissionDenied, codes.OK},
			"AbortCutover needs role operator; token sidecars has role sidecar"},
		{"operator certificate", pki.alice, "", want{codes.OK, codes.NotFound, codes.OK}, ""},
		{"sidecar certificate by URI prefix", pki.orders, "", want{codes.PermissionDenied, codes.PermissionDenied, codes.OK},
			"AbortCutover needs role operator; certificate spiffe://test/ns/shop/sa/orders has role sidecar"},
		{"unmapped certificate", pki.mallory, "", want{codes.PermissionDenied, codes.PermissionDenied, codes.PermissionDenied},
			"AbortCutover needs role operator; certificate mallory has role none"},
		{"token wins over certificate", pki.alice, dashboardsSecret, want{codes.OK, codes.PermissionDenied, codes.PermissionDenied},
			"token dashboards has role read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := sp.dial(t, tc.cert, tc.token)
			client := switchyardv1.NewControlServiceClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := client.ListCutovers(ctx, &switchyardv1.ListCutoversRequest{})
			if got := status.Code(err); got != tc.want.read {
				t.Errorf("ListCutovers: %v, want %v", err, tc.want.read)
			}
			_, err = client.AbortCutover(ctx, &switchyardv1.AbortCutoverRequest{Id: "c-nope", Reason: "test"})
			if got := status.Code(err); got != tc.want.operate {
				t.Errorf("AbortCutover: %v, want %v", err, tc.want.operate)
			}
			if tc.msg != "" && !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("AbortCutover: %q, want it to say %q", status.Convert(err).Message(), tc.msg)
			}
			if got := status.Code(connectOnce(conn, strings.ReplaceAll(tc.name, " ", "-"))); got != tc.want.connect {
				t.Errorf("Connect: %v, want %v", got, tc.want.connect)
			}
		})
	}

	t.Run("certificate from another CA", func(t *testing.T) {
		conn := sp.dial(t, pki.other, "")
		_, err := switchyardv1.NewControlServiceClient(conn).ListCutovers(context.Background(), &switchyardv1.ListCutoversRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("ListCutovers with a certificate from another CA: %v, want the handshake refused (UNAVAILABLE)", err)
		}
	})
	t.Run("unauthenticated message", func(t *testing.T) {
		_, err := sp.client.CreateCutover(context.Background(), &switchyardv1.CreateCutoverRequest{Spec: spec()})
		// sp.client sends no token: plane.conn has none; authed() adds it.
		want := "CreateCutover needs credentials: a bearer token (authorization: Bearer <token>) or a client certificate"
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != want {
			t.Fatalf("CreateCutover without credentials: %v, want UNAUTHENTICATED %q", err, want)
		}
	})
	assertNoSecrets(t, sp, pki)
}

// TestRolesOverREST checks the same rules through the REST gateway, where
// the token is an Authorization header and the certificate the TLS
// connection's.
func TestRolesOverREST(t *testing.T) {
	pki := newPKI(t)
	sp := startSecurePlane(t, secureConfig(pki, ""), pki)
	body := `{"selector":{"apps":["orders"]},"source":"source","target":"target"}`
	for _, tc := range []struct {
		name, method, path, token string
		cert                      tlstest.Paths
		want                      int
		msg                       string
	}{
		{"list anonymous", "GET", "/v1/cutovers", "", tlstest.Paths{}, 401, "ListCutovers needs credentials"},
		{"list read-only", "GET", "/v1/cutovers", dashboardsSecret, tlstest.Paths{}, 200, ""},
		{"list operator cert", "GET", "/v1/cutovers", "", pki.alice, 200, ""},
		{"list sidecar cert", "GET", "/v1/cutovers", "", pki.orders, 403, "ListCutovers needs role read-only or operator"},
		{"create read-only", "POST", "/v1/cutovers", dashboardsSecret, tlstest.Paths{}, 403, "CreateCutover needs role operator; token dashboards has role read-only"},
		{"create wrong token", "POST", "/v1/cutovers", "nope", tlstest.Paths{}, 401, "invalid bearer token"},
		// Past auth: no sidecar runs "orders", which the cutover refuses.
		{"create operator cert", "POST", "/v1/cutovers", "", pki.alice, 400, ""},
		{"declare sidecar token", "POST", "/v1/sidecars:declare", sidecarsSecret, tlstest.Paths{}, 403,
			"DeclareState needs role operator; token sidecars has role sidecar"},
		{"declare read-only", "POST", "/v1/sidecars:declare", dashboardsSecret, tlstest.Paths{}, 403, "DeclareState needs role operator"},
		// Past auth: the body (a cutover's) names no active cluster.
		{"declare operator token", "POST", "/v1/sidecars:declare", opsSecret, tlstest.Paths{}, 400, "active_cluster"},
		{"watch anonymous", "GET", "/v1/cutovers/c-1:watch", "", tlstest.Paths{}, 401, "WatchCutover needs credentials"},
		{"watch sidecar token", "GET", "/v1/cutovers/c-1:watch", sidecarsSecret, tlstest.Paths{}, 403, "WatchCutover needs role read-only or operator"},
		{"watch read-only, unknown cutover", "GET", "/v1/cutovers/c-1:watch", dashboardsSecret, tlstest.Paths{}, 404, ""},
		{"health needs nothing", "GET", "/healthz", "", tlstest.Paths{}, 200, ""},
		{"metrics", "GET", "/metrics", "", tlstest.Paths{}, 200, "switchyard_control_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader
			if tc.method == "POST" {
				rd = strings.NewReader(body)
			}
			req, err := http.NewRequest(tc.method, "https://"+sp.addr+tc.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := sp.httpClient(t, tc.cert).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.msg) {
				t.Fatalf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.want, tc.msg)
			}
			checkNoSecrets(t, tc.method+" "+tc.path+" response", string(b), pki)
			if resp.ProtoMajor != 2 {
				t.Errorf("served over HTTP/%d, want HTTP/2 over TLS", resp.ProtoMajor)
			}
		})
	}
	assertNoSecrets(t, sp, pki)
}

// TestMTLSRequired: with a client CA and no clientCertOptional, a client
// without a certificate does not get past the handshake, even with a
// valid token; one with a certificate does.
func TestMTLSRequired(t *testing.T) {
	pki := newPKI(t)
	cfg := secureConfig(pki, "")
	cfg.ClientCertOptional = false
	sp := startSecurePlane(t, cfg, pki)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := switchyardv1.NewControlServiceClient(sp.dial(t, tlstest.Paths{}, opsSecret)).ListCutovers(ctx, &switchyardv1.ListCutoversRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("token without a certificate: %v, want UNAVAILABLE (handshake refused)", err)
	}
	if _, err := switchyardv1.NewControlServiceClient(sp.dial(t, pki.alice, "")).ListCutovers(ctx, &switchyardv1.ListCutoversRequest{}); err != nil {
		t.Fatalf("operator certificate: %v", err)
	}
	// A token-only sidecar cannot connect; a certificate sidecar can.
	if err := connectOnce(sp.dial(t, tlstest.Paths{}, sidecarsSecret), "a"); status.Code(err) != codes.Unavailable {
		t.Fatalf("sidecar token without a certificate: %v, want UNAVAILABLE", err)
	}
	if err := connectOnce(sp.dial(t, pki.orders, ""), "b"); err != nil {
		t.Fatalf("sidecar certificate: %v", err)
	}
	assertNoSecrets(t, sp, pki)
}

// TestServerCertificateReload rotates the serving certificate under a
// running plane: the next connection is served the new one.
func TestServerCertificateReload(t *testing.T) {
	pki := newPKI(t)
	sp := startSecurePlane(t, secureConfig(pki, ""), pki)
	serial := func() string {
		t.Helper()
		cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: pki.server.CA, CertFile: pki.alice.Cert, KeyFile: pki.alice.Key}.ForAddr(sp.addr))
		if err != nil {
			t.Fatal(err)
		}
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", sp.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	rotated := pki.ca.Localhost(t)
	tlstest.Replace(t, pki.server.Cert, rotated.CertPEM)
	tlstest.Replace(t, pki.server.Key, rotated.KeyPEM)
	if got := serial(); got != rotated.Cert.SerialNumber.String() || got == before {
		t.Fatalf("after rotation the plane serves serial %s (before %s), want %s", got, before, rotated.Cert.SerialNumber)
	}
	// And the API still works over the new certificate.
	if _, err := switchyardv1.NewControlServiceClient(sp.dial(t, pki.alice, "")).ListCutovers(context.Background(), &switchyardv1.ListCutoversRequest{}); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

// TestAuditLog: every mutating call, allowed or refused, is one JSON line
// naming who (never the token), what, when and the outcome.
func TestAuditLog(t *testing.T) {
	pki := newPKI(t)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	sp := startSecurePlane(t, secureConfig(pki, auditFile), pki)
	connectSidecar(t, sp.plane, "orders", "a", "source")
	sp.waitSidecars(1)
	start := time.Now().UTC().Add(-time.Second)

	ops := switchyardv1.NewControlServiceClient(sp.dial(t, tlstest.Paths{}, opsSecret))
	dash := switchyardv1.NewControlServiceClient(sp.dial(t, tlstest.Paths{}, dashboardsSecret))
	alice := switchyardv1.NewControlServiceClient(sp.dial(t, pki.alice, ""))
	ctx := context.Background()
	created, err := ops.CreateCutover(ctx, &switchyardv1.CreateCutoverRequest{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetCutover().GetId()
	if _, err := dash.AbortCutover(ctx, &switchyardv1.AbortCutoverRequest{Id: id, Reason: "not mine"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read-only abort: %v", err)
	}
	if _, err := alice.AbortCutover(ctx, &switchyardv1.AbortCutoverRequest{Id: "c-missing", Reason: "typo"}); status.Code(err) != codes.NotFound {
		t.Fatalf("abort of a missing cutover: %v", err)
	}
	// No sidecar of billing is connected: the declaration holds for those
	// that start later.
	if _, err := ops.DeclareState(ctx, &switchyardv1.DeclareStateRequest{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"billing"}}, ActiveCluster: "target"}); err != nil {
		t.Fatalf("declare: %v", err)
	}
	// Reads are not audited.
	if _, err := dash.ListCutovers(ctx, &switchyardv1.ListCutoversRequest{}); err != nil {
		t.Fatal(err)
	}

	entries := readAudit(t, auditFile)
	want := []struct {
		who, role, method, outcome, cutover string
		request                             []string
	}{
		{"token ops", "operator", "CreateCutover", "OK", id, []string{`"source":"source"`, `"apps":["orders"]`}},
		{"token dashboards", "read-only", "AbortCutover", "PermissionDenied", "", []string{`"id":"` + id + `"`, `"reason":"not mine"`}},
		{"certificate alice", "operator", "AbortCutover", "NotFound", "", []string{`"id":"c-missing"`}},
		{"token ops", "operator", "DeclareState", "OK", "", []string{`"apps":["billing"]`, `"activeCluster":"target"`}},
	}
	if len(entries) != len(want) {
		t.Fatalf("audit log has %d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, w := range want {
		e := entries[i]
		if e.Who != w.who || e.Role != w.role || e.Method != w.method || e.Outcome != w.outcome || e.Cutover != w.cutover {
			t.Errorf("entry %d: %+v, want who %q role %q method %q outcome %q cutover %q", i, e, w.who, w.role, w.method, w.outcome, w.cutover)
		}
		for _, r := range w.request {
			if !strings.Contains(string(e.Request), r) {
				t.Errorf("entry %d: request %s does not contain %s", i, e.Request, r)
			}
		}
		if e.Time.Before(start) || e.Time.After(time.Now().UTC()) {
			t.Errorf("entry %d: time %v is not the time of the call", i, e.Time)
		}
		if !strings.HasPrefix(e.Remote, "127.0.0.1:") {
			t.Errorf("entry %d: remote %q", i, e.Remote)
		}
	}
	if !strings.Contains(entries[1].Error, "needs role operator") {
		t.Errorf("refused entry's error %q does not say why", entries[1].Error)
	}
	// The zap log carries the same entries.
	if n := sp.logs.FilterMessage("audit").Len(); n != len(want) {
		t.Errorf("%d audit lines in the zap log, want %d", n, len(want))
	}
	assertNoSecrets(t, sp, pki)
}

func readAudit(t *testing.T, path string) []AuditEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []AuditEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertNoSecrets fails if a token or a line of a private key appears in
// the plane's logs or its audit file.
func assertNoSecrets(t *testing.T, sp *securePlane, pki securePKI) {
	t.Helper()
	var all bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, e := range sp.logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(buf.Bytes())
	}
	if sp.auditFile != "" {
		b, err := os.ReadFile(sp.auditFile)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		all.Write(b)
	}
	if all.Len() == 0 {
		t.Fatal("nothing was logged: the check below would prove nothing")
	}
	checkNoSecrets(t, "logs and audit file", all.String(), pki)
}

// checkNoSecrets fails if s contains a token or a line of a private key.
func checkNoSecrets(t *testing.T, what, s string, pki securePKI) {
	t.Helper()
	for _, secret := range []string{legacySecret, opsSecret, dashboardsSecret, sidecarsSecret, shopSecret} {
		if strings.Contains(s, secret) {
			t.Errorf("%s contain the token %s", what, secret[:4]+"...")
		}
	}
	for _, p := range []tlstest.Paths{pki.server, pki.alice, pki.orders, pki.mallory, pki.other} {
		key, err := os.ReadFile(p.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(key), "\n") {
			if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(s, line) {
				t.Errorf("%s contain private key material of %s", what, p.Key)
			}
		}
	}
}

// TestServerConfigValidate: each problem is reported naming its field, and
// no error quotes a token or a key.
func TestServerConfigValidate(t *testing.T) {
	pki := newPKI(t)
	missing := filepath.Join(pki.dir, "missing.pem")
	ok := secureConfig(pki, filepath.Join(pki.dir, "audit.jsonl"))
	for _, tc := range []struct {
		name   string
		modify func(*ServerConfig)
		want   []string // nil: valid
	}{
		{"valid", func(*ServerConfig) {}, nil},
		{"loopback without auth", func(c *ServerConfig) { *c = ServerConfig{Listen: "127.0.0.1:9180"} }, nil},
		{"localhost without auth", func(c *ServerConfig) { *c = ServerConfig{Listen: "localhost:9180"} }, nil},
		{"bad listen", func(c *ServerConfig) { c.Listen = "9180" }, []string{`listen: "9180"`}},
		{"public without auth", func(c *ServerConfig) { *c = ServerConfig{Listen: "0.0.0.0:9180"} }, []string{"listen: 0.0.0.0:9180 is not a loopback address"}},
		{"public with TLS but no auth", func(c *ServerConfig) {
			*c = ServerConfig{Listen: "0.0.0.0:9180", TLS: tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key}}
		}, []string{"is not a loopback address"}},
		{"public with client CA only", func(c *ServerConfig) {
			*c = ServerConfig{Listen: "0.0.0.0:9180", TLS: tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key, CAFile: pki.server.CA}}
		}, nil},
		{"public with a token over plaintext", func(c *ServerConfig) { *c = ServerConfig{Listen: "0.0.0.0:9180", Token: legacySecret} },
			[]string{"tokenFile, tokens: listen 0.0.0.0:9180 is not a loopback address and serves no TLS", "allowPlaintextTokens"}},
		{"all interfaces with named tokens over plaintext", func(c *ServerConfig) {
			c.Listen = ":9180"
			c.TLS = tlsfiles.Files{}
			c.ClientCertOptional = false
			c.ClientCertificates = nil
		},
			[]string{"tokenFile, tokens: listen :9180 is not a loopback address"}},
		{"public with a token over plaintext, allowed", func(c *ServerConfig) {
			*c = ServerConfig{Listen: "0.0.0.0:9180", Token: legacySecret, AllowPlaintextTokens: true}
		}, nil},
		{"public with a token over TLS", func(c *ServerConfig) {
			*c = ServerConfig{Listen: "0.0.0.0:9180", Token: legacySecret, TLS: tlsfiles.Files{CertFile: pki.server.Cert, KeyFile: pki.server.Key}}
		}, nil},
		{"loopback with a token over plaintext", func(c *ServerConfig) { *c = ServerConfig{Listen: "127.0.0.1:9180", Token: legacySecret} }, nil},
		{"sidecar token without apps", func(c *ServerConfig) { c.Tokens[2].Apps = nil }, []string{"tokens[2].apps: required for role sidecar"}},
		{"sidecar token for every app", func(c *ServerConfig) { c.Tokens[2].Apps = []string{"orders", "*"} }, []string{`tokens[2].apps: "*": an application name`}},
		{"apps on an operator token", func(c *ServerConfig) { c.Tokens[0].Apps = []string{"orders"} }, []string{"tokens[0].apps: only for role sidecar"}},
		{"instances on an operator token", func(c *ServerConfig) { c.Tokens[0].Instances = []string{"shop/*"} },
			[]string{"tokens[0].instances: only for role sidecar"}},
		{"every instance", func(c *ServerConfig) { c.Tokens[3].Instances = []string{"*"} }, []string{`tokens[3].instances: "*": an instance name`}},
		{"sidecar certificate without apps", func(c *ServerConfig) { c.ClientCertificates[1].Apps = nil }, []string{"clientCertificates[1].apps: required for role sidecar"}},
		{"bound instance of an operator", func(c *ServerConfig) { c.ClientCertificates[0].BindInstance = true }, []string{"clientCertificates[0].bindInstance: only for role sidecar"}},
		{"missing cert file", func(c *ServerConfig) { c.TLS.CertFile = missing }, []string{"tls.certFile: open " + missing + ": no such file"}},
		{"missing client CA", func(c *ServerConfig) { c.TLS.CAFile = missing }, []string{"tls.caFile: open " + missing}},
		{"key of another certificate", func(c *ServerConfig) { c.TLS.KeyFile = pki.alice.Key }, []string{"tls.certFile: load key pair", "private key does not match"}},
		{"CA without a pair", func(c *ServerConfig) { c.TLS.CertFile, c.TLS.KeyFile = "", "" }, []string{"tls.certFile, tls.keyFile: required"}},
		{"server name", func(c *ServerConfig) { c.TLS.ServerName = "x" }, []string{"tls.serverName: a client setting"}},
		{"optional without CA", func(c *ServerConfig) { c.TLS.CAFile = ""; c.ClientCertificates = nil }, []string{"tls.clientCertOptional: needs tls.caFile"}},
		{"identities without CA", func(c *ServerConfig) { c.TLS.CAFile = ""; c.ClientCertOptional = false }, []string{"clientCertificates: need tls.caFile"}},
		{"token without name", func(c *ServerConfig) { c.Tokens[0].Name = "" }, []string{"tokens[0].name: required"}},
		{"token name repeated", func(c *ServerConfig) { c.Tokens[1].Name = "ops" }, []string{`tokens[1].name: "ops" repeated`}},
		{"token without role", func(c *ServerConfig) { c.Tokens[2].Role = RoleNone }, []string{"tokens[2].role: want sidecar, read-only or operator"}},
		{"empty token", func(c *ServerConfig) { c.Tokens[0].Value = "" }, []string{"tokens[0]: empty token"}},
		{"two names, one token", func(c *ServerConfig) { c.Tokens[1].Value = opsSecret }, []string{"tokens[1] (dashboards): the same token as ops"}},
		{"legacy token reused", func(c *ServerConfig) { c.Tokens[0].Value = legacySecret }, []string{"tokens[0] (ops): the same token as default"}},
		{"identity match-all", func(c *ServerConfig) { c.ClientCertificates[0].Identity = "*" }, []string{"clientCertificates[0].identity"}},
		{"allowed host with a port", func(c *ServerConfig) { c.AllowedHosts = []string{"ok.example", "svc:9180"} }, []string{`allowedHosts[1]: "svc:9180": want a host name`}},
		{"limits", func(c *ServerConfig) {
			c.Limits = Limits{SidecarsPerCredential: -1, MessageBytes: 100 << 20, StreamsPerConnection: -2}
		},
			[]string{"limits.sidecarsPerCredential: -1", "limits.messageBytes: 104857600: want 16 KiB to 64 MiB", "limits.streamsPerConnection: -2"}},
		{"audit dir missing", func(c *ServerConfig) { c.AuditFile = filepath.Join(missing, "audit.jsonl") }, []string{"auditFile: stat " + missing}},
		{"several at once", func(c *ServerConfig) { c.Listen = "x"; c.Tokens[0].Name = "" }, []string{"listen:", "tokens[0].name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			cfg.Tokens = append([]Token(nil), ok.Tokens...)
			cfg.ClientCertificates = append([]ClientCertificate(nil), ok.ClientCertificates...)
			tc.modify(&cfg)
			err := cfg.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %q, want it to contain %q", err, w)
				}
			}
			checkNoSecrets(t, "the error", err.Error(), pki)
			// A config printed with %v or %+v does not show tokens either.
			checkNoSecrets(t, "the printed config", fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg.Tokens), pki)
		})
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []Role{RoleSidecar, RoleReadOnly, RoleOperator} {
		got, err := ParseRole(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %v, %v", r.String(), got, err)
		}
	}
	if _, err := ParseRole("admin"); err == nil || !strings.Contains(err.Error(), `role "admin": want sidecar, read-only or operator`) {
		t.Errorf("ParseRole(admin): %v", err)
	}
}

// TestSidecarClaimsBoundToCredentials: a sidecar credential may open
// streams only as the applications it names, and a certificate bound to
// its instance only as that instance; an operator may claim any sidecar.
func TestSidecarClaimsBoundToCredentials(t *testing.T) {
	pki := newPKI(t)
	sp := startSecurePlane(t, secureConfig(pki, ""), pki)
	none := tlstest.Paths{}
	for _, tc := range []struct {
		name          string
		cert          tlstest.Paths
		token         string
		app, instance string
		want          codes.Code
		msg           string
	}{
		{"token, its app", none, sidecarsSecret, "probe", "p-1", codes.OK, "token sidecars"},
		{"token, an app by prefix", none, sidecarsSecret, "payments", "p-1", codes.OK, "token sidecars"},
		{"token, another app", none, sidecarsSecret, "orders", "o-1", codes.PermissionDenied,
			`token sidecars may not claim application "orders" (it may claim probe, pay*)`},
		{"token, a prefix is not an app", none, sidecarsSecret, "pa", "p-1", codes.PermissionDenied, `may not claim application "pa"`},
		{"certificate, its app", pki.orders, "", "probe", "p-2", codes.OK, "certificate spiffe://test/ns/shop/sa/orders"},
		{"certificate, another app", pki.orders, "", "orders", "o-2", codes.PermissionDenied,
			`certificate spiffe://test/ns/shop/sa/orders may not claim application "orders" (it may claim probe)`},
		{"bound certificate, its instance by common name", pki.pod1, "", "orders", "shop/orders-1", codes.OK, "certificate spiffe://test/pods/shop/orders-1"},
		{"bound certificate, its instance by URI", pki.pod1, "", "orders", "spiffe://test/pods/shop/orders-1", codes.OK, "certificate spiffe://test/pods/shop/orders-1"},
		{"bound certificate, another instance", pki.pod1, "", "orders", "shop/orders-2", codes.PermissionDenied,
			`may claim only an instance its certificate names (spiffe://test/pods/shop/orders-1, shop/orders-1), not "shop/orders-2"`},
		{"bound certificate, another app", pki.pod1, "", "payments", "shop/orders-1", codes.PermissionDenied, `may not claim application "payments"`},
		{"namespace token, an instance of its namespace", none, shopSecret, "orders", "shop/orders-9", codes.OK, "token shop"},
		{"namespace token, an instance of another namespace", none, shopSecret, "orders", "billing/orders-9", codes.PermissionDenied,
			`token shop may not claim instance "billing/orders-9" (it may claim shop/*)`},
		{"operator token, any app", none, opsSecret, "orders", "o-3", codes.OK, "token ops"},
		{"operator certificate, any app", pki.alice, "", "billing", "b-1", codes.OK, "certificate alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := sp.dial(t, tc.cert, tc.token)
			s, _, err := openStream(t, conn, "", &switchyardv1.ConnectRequest{
				Identity: &switchyardv1.SidecarIdentity{App: tc.app, Instance: tc.instance},
				Status:   &switchyardv1.ProxyStatus{ActiveCluster: "source"}})
			defer s.cancel()
			if status.Code(err) != tc.want || (tc.want != codes.OK && !strings.Contains(status.Convert(err).Message(), tc.msg)) {
				t.Fatalf("claim %s/%s: %v, want %v with %q", tc.app, tc.instance, err, tc.want, tc.msg)
			}
			for _, sc := range sp.reg.List(tc.app) {
				if sc.GetIdentity().GetInstance() != tc.instance {
					continue
				}
				switch {
				case tc.want != codes.OK:
					t.Errorf("the refused claim is registered: %v", sc)
				case sc.GetCredential() != tc.msg:
					t.Errorf("listed with credential %q, want %q", sc.GetCredential(), tc.msg)
				}
			}
		})
	}
	assertNoSecrets(t, sp, pki)
}

// TestSidecarRoleCannotSwitchOrGate: with a token of the sidecar role, an
// attacker can neither take over a connected sidecar, nor get a state of
// its own pushed to the application, nor make a mutating call (gRPC and
// REST).
func TestSidecarRoleCannotSwitchOrGate(t *testing.T) {
	pki := newPKI(t)
	sp := startSecurePlane(t, secureConfig(pki, ""), pki)
	real := connectSidecar(t, sp.plane, "payments", "pod-1", "source")
	sp.waitConnected("payments", "pod-1")
	conn := sp.dial(t, tlstest.Paths{}, sidecarsSecret)

	_, _, err := openStream(t, conn, "", forged("payments", "pod-1", 1<<40))
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("taking over payments/pod-1: %v, want AlreadyExists", err)
	}
	s, m, err := openStream(t, conn, "", forged("payments", "attacker", 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	defer s.cancel()
	if d := m.GetDesired(); d.GetActiveCluster() != "" || d.GetGate() != nil {
		t.Errorf("the forged stream was sent its own state: %v", d)
	}
	for _, sc := range sp.reg.List("payments") {
		if d := sc.GetDesired(); d.GetActiveCluster() != "" || d.GetGate() != nil {
			t.Errorf("payments/%s is wanted in %v after the forged claim", sc.GetIdentity().GetInstance(), d)
		}
	}
	if active, gate := real.state(); active != "source" || gate != nil {
		t.Errorf("payments/pod-1 runs on %s with gate %v, want source and no gate", active, gate)
	}

	client := switchyardv1.NewControlServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = client.CreateCutover(ctx, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"payments"}}, Source: "source", Target: "target"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("CreateCutover with a sidecar token: %v, want PermissionDenied", err)
	}
	_, err = client.AbortCutover(ctx, &switchyardv1.AbortCutoverRequest{Id: "c-1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("AbortCutover with a sidecar token: %v, want PermissionDenied", err)
	}
	_, err = client.DeclareState(ctx, &switchyardv1.DeclareStateRequest{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"payments"}}, ActiveCluster: "target"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("DeclareState with a sidecar token: %v, want PermissionDenied", err)
	}
	for _, path := range []string{"/v1/cutovers", "/v1/cutovers/c-1:abort", "/v1/sidecars:declare"} {
		req, err := http.NewRequest("POST", "https://"+sp.addr+path,
			strings.NewReader(`{"selector":{"apps":["payments"]},"source":"source","target":"target"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+sidecarsSecret)
		resp, err := sp.httpClient(t, tlstest.Paths{}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s with a sidecar token: %d, want 403", path, resp.StatusCode)
		}
	}
}
