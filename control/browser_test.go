package control

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/apiguard/apiguardtest"
)

// TestBrowserRequestsRefused: a control plane without credentials, as it
// may run on loopback, and the requests a web page can make a browser on
// that machine send it — a "simple" cross-origin POST (text/plain, form
// data: no preflight), a foreign Origin, a DNS-rebinding Host. None may
// start a cutover or read the API. What curl, switchyard ctl and the
// sidecars send still works.
func TestBrowserRequestsRefused(t *testing.T) {
	p := startPlaneConfig(t, "", nil, ServerConfig{Listen: "127.0.0.1:0", AllowedHosts: []string{"switchyard-control.switchyard.svc"}})
	connectSidecar(t, p, "orders", "pod-1", "source")
	p.waitSidecars(1)
	_, port, _ := net.SplitHostPort(p.addr)
	b, err := protojson.Marshal(spec())
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	const jsonType = "application/json"

	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		wantCode     int
		wantBody     string
		wantCutover  bool
	}{
		{name: "text/plain from a page", method: "POST", path: "/v1/cutovers", body: body,
			header:   map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
			wantCode: 403, wantBody: "cross-origin"},
		{name: "text/plain, origin stripped", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": "text/plain"}, wantCode: 415, wantBody: "application/json"},
		{name: "form data", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, wantCode: 415},
		{name: "no content type", method: "POST", path: "/v1/cutovers", body: body, wantCode: 415},
		{name: "foreign origin, json", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": jsonType, "Origin": "http://evil.example"}, wantCode: 403, wantBody: "origin"},
		{name: "same-site fetch", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": jsonType, "Sec-Fetch-Site": "same-site"}, wantCode: 403},
		{name: "DNS rebinding create", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Host": "evil.example:" + port,
				"Origin": "http://evil.example:" + port, "Sec-Fetch-Site": "same-origin"}, wantCode: 403, wantBody: "DNS rebinding"},
		{name: "DNS rebinding read", method: "GET", path: "/v1/sidecars", header: map[string]string{"Host": "evil.example:" + port},
			wantCode: 403},
		{name: "DNS rebinding watch", method: "GET", path: "/v1/cutovers/x:watch", header: map[string]string{"Host": "evil.example"},
			wantCode: 403},
		{name: "foreign origin read", method: "GET", path: "/v1/cutovers", header: map[string]string{"Origin": "http://evil.example"},
			wantCode: 403},

		// curl, scripts, probes.
		{name: "curl --json", method: "POST", path: "/v1/cutovers", body: body,
			header: map[string]string{"Content-Type": jsonType, "Accept": jsonType}, wantCode: 200, wantCutover: true},
		{name: "curl read by localhost", method: "GET", path: "/v1/sidecars", header: map[string]string{"Host": "localhost:" + port}, wantCode: 200},
		{name: "curl read by an allowed name", method: "GET", path: "/v1/clusters",
			header: map[string]string{"Host": "switchyard-control.switchyard.svc:" + port}, wantCode: 200},
		{name: "probe by pod address", method: "GET", path: "/healthz", header: map[string]string{"Host": "10.1.2.3:" + port}, wantCode: 200},
		{name: "same origin", method: "GET", path: "/v1/cutovers",
			header: map[string]string{"Origin": "http://" + p.addr, "Sec-Fetch-Site": "same-origin"}, wantCode: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(p.ct.List())
			code, got, _ := apiguardtest.Do(t, tc.method, "http://"+p.addr+tc.path, tc.body, tc.header)
			if code != tc.wantCode || !strings.Contains(got, tc.wantBody) {
				t.Errorf("%s %s: %d %.200s, want %d with %q", tc.method, tc.path, code, got, tc.wantCode, tc.wantBody)
			}
			created := len(p.ct.List()) > before
			if created != tc.wantCutover {
				t.Errorf("cutover created: %v, want %v", created, tc.wantCutover)
			}
			if created {
				// Let it end, so the next case may create one.
				p.waitCutover(p.ct.List()[0].GetId(), switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
			}
		})
	}

	// gRPC: an Origin (which only a browser sends) is refused; ctl and the
	// sidecars, which dial the Service by name, are not checked by name.
	origin := metadata.AppendToOutgoingContext(context.Background(), "origin", "http://evil.example")
	if _, err := p.client.ListCutovers(origin, &switchyardv1.ListCutoversRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC read with a foreign origin: %v, want PERMISSION_DENIED", err)
	}
	if _, err := p.client.CreateCutover(origin, &switchyardv1.CreateCutoverRequest{Spec: spec()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC create with a foreign origin: %v, want PERMISSION_DENIED", err)
	}
	if _, err := p.client.ListClusters(context.Background(), &switchyardv1.ListClustersRequest{}); err != nil {
		t.Errorf("gRPC read: %v", err)
	}
}
