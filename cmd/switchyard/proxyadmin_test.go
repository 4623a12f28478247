package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

// TestParseProxyOptionsAdmin: the admin API stays on loopback unless a
// token or a client CA is configured, and the errors name the flag,
// variable or config key that set the address; the token, TLS files,
// allowed hosts and health listener come from every layer.
func TestParseProxyOptionsAdmin(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte("file-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pki := tlstest.NewCA(t, "admin-ca")
	server := tlstest.Write(t, dir, pki, pki.Localhost(t))
	cluster := []string{"--cluster", "a=kafka:9092"}

	errs := []struct {
		name string
		args []string
		env  map[string]string
		yaml string
		want []string
	}{
		{name: "--admin on every interface", args: []string{"--admin", "0.0.0.0:9190"},
			want: []string{"--admin 0.0.0.0:9190: not a loopback address", "--admin-token-file", "--admin-tls-ca", "--health-listen"}},
		{name: "--admin with an empty host", args: []string{"--admin", ":9190"}, want: []string{"--admin :9190: not a loopback address"}},
		{name: "--admin on the pod address", args: []string{"--admin", "10.1.2.3:9190"}, want: []string{"--admin 10.1.2.3:9190: not a loopback address"}},
		{name: "SWITCHYARD_ADMIN on every interface", env: map[string]string{"SWITCHYARD_ADMIN": "0.0.0.0:9190"},
			want: []string{"SWITCHYARD_ADMIN 0.0.0.0:9190: not a loopback address"}},
		{name: "admin: in the config file", yaml: "admin: 0.0.0.0:9190\n",
			want: []string{"--admin (admin in the config file) 0.0.0.0:9190: not a loopback address"}},
		{name: "a TLS certificate is not a credential", args: []string{"--admin", "0.0.0.0:9190", "--admin-tls-cert", server.Cert, "--admin-tls-key", server.Key},
			want: []string{"not a loopback address"}},
		{name: "client CA without a certificate", args: []string{"--admin", "0.0.0.0:9190", "--admin-tls-ca", server.CA},
			want: []string{"--admin-tls-cert, --admin-tls-key: required to serve TLS"}},
		{name: "missing admin TLS key", args: []string{"--admin-tls-cert", server.Cert},
			want: []string{"--admin-tls-key: must be set when --admin-tls-cert is"}},
		{name: "unreadable admin CA", args: []string{"--admin", "0.0.0.0:9190", "--admin-tls-cert", server.Cert, "--admin-tls-key", server.Key, "--admin-tls-ca", "/nonexistent/ca.pem"},
			want: []string{"--admin-tls-ca: open /nonexistent/ca.pem"}},
		{name: "missing admin token file", args: []string{"--admin-token-file", "/nonexistent/token"},
			want: []string{"admin-token-file: open /nonexistent/token"}},
		{name: "empty admin token file", args: []string{"--admin-token-file", os.DevNull}, want: []string{"admin-token-file", "empty"}},
		{name: "admin token and token file in the environment",
			env:  map[string]string{"SWITCHYARD_ADMIN_TOKEN": "t", "SWITCHYARD_ADMIN_TOKEN_FILE": tokenFile},
			want: []string{"SWITCHYARD_ADMIN_TOKEN and SWITCHYARD_ADMIN_TOKEN_FILE: set one, not both"}},
		{name: "health listener on the admin address", args: []string{"--health-listen", "127.0.0.1:9190"},
			want: []string{"healthListen: 127.0.0.1:9190 is also listen"}},
		{name: "allowed host with a port", args: []string{"--admin-allowed-hosts", "a.example,b.example:9190"}, want: []string{"allowedHosts[1]"}},
		{name: "client setting in adminTls", yaml: "adminTls: {certFile: " + server.Cert + ", keyFile: " + server.Key + ", serverName: x}\n",
			want: []string{"adminTls.serverName, adminTls.insecureSkipVerify: client settings"}},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			args := append(slices.Clone(cluster), tt.args...)
			if tt.yaml != "" {
				args = append([]string{"--config", writeConfig(t, tt.yaml)}, args...)
			}
			_, err := parseProxyOptions(args, envOf(tt.env), io.Discard)
			if err == nil {
				t.Fatalf("parseProxyOptions(%q, %v): no error", args, tt.env)
			}
			if !errors.As(err, new(usageError)) {
				t.Errorf("error %q is not a usage error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "file-admin-token") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}

	type want struct {
		listen, health, token string
		cert, ca              string
		hosts                 []string
	}
	oks := []struct {
		name string
		args []string
		env  map[string]string
		yaml string
		want want
	}{
		{name: "defaults", want: want{listen: "127.0.0.1:9190"}},
		{name: "every interface with a token from the environment", args: []string{"--admin", "0.0.0.0:9190"},
			env: map[string]string{"SWITCHYARD_ADMIN_TOKEN": " env-admin-token "}, want: want{listen: "0.0.0.0:9190", token: "env-admin-token"}},
		{name: "every interface with a token file", args: []string{"--admin", ":9190", "--admin-token-file", tokenFile},
			want: want{listen: ":9190", token: "file-admin-token"}},
		{name: "every interface with mTLS", args: []string{"--admin", "0.0.0.0:9190", "--admin-tls-cert", server.Cert, "--admin-tls-key", server.Key, "--admin-tls-ca", server.CA},
			want: want{listen: "0.0.0.0:9190", cert: server.Cert, ca: server.CA}},
		{name: "health listener and allowed hosts from flags", args: []string{"--health-listen", "0.0.0.0:9191", "--admin-allowed-hosts", "a.example, b.example"},
			want: want{listen: "127.0.0.1:9190", health: "0.0.0.0:9191", hosts: []string{"a.example", "b.example"}}},
		{name: "all from the config file",
			yaml: "admin: 0.0.0.0:9190\nhealthListen: 0.0.0.0:9191\nadminTokenFile: " + tokenFile +
				"\nadminTls: {certFile: " + server.Cert + ", keyFile: " + server.Key + "}\nadminAllowedHosts: [admin.example]\n",
			want: want{listen: "0.0.0.0:9190", health: "0.0.0.0:9191", token: "file-admin-token", cert: server.Cert, hosts: []string{"admin.example"}}},
		{name: "SWITCHYARD_ADMIN_TOKEN over the file's token file", yaml: "adminTokenFile: " + tokenFile + "\n",
			env: map[string]string{"SWITCHYARD_ADMIN_TOKEN": "env-admin-token"}, want: want{listen: "127.0.0.1:9190", token: "env-admin-token"}},
		{name: "--health-listen over SWITCHYARD_HEALTH_LISTEN", args: []string{"--health-listen", "0.0.0.0:9292"},
			env: map[string]string{"SWITCHYARD_HEALTH_LISTEN": "0.0.0.0:9191"}, want: want{listen: "127.0.0.1:9190", health: "0.0.0.0:9292"}},
	}
	for _, tt := range oks {
		t.Run(tt.name, func(t *testing.T) {
			args := append(slices.Clone(cluster), tt.args...)
			if tt.yaml != "" {
				args = append([]string{"--config", writeConfig(t, tt.yaml)}, args...)
			}
			o, err := parseProxyOptions(args, envOf(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseProxyOptions: %v", err)
			}
			a, w := o.Admin, tt.want
			if a.Listen != w.listen || a.HealthListen != w.health || string(a.Token) != w.token || a.TLS.CertFile != w.cert ||
				a.TLS.CAFile != w.ca || !slices.Equal(a.AllowedHosts, w.hosts) {
				t.Errorf("admin = {listen %s health %s token %q cert %s ca %s hosts %v}, want %+v",
					a.Listen, a.HealthListen, string(a.Token), a.TLS.CertFile, a.TLS.CAFile, a.AllowedHosts, w)
			}
		})
	}
}

// TestRunProxyAdminGuarded runs `switchyard proxy` the way the sidecar
// injector does — admin API on loopback, health listener on another port —
// plus an admin token, and checks over HTTP and gRPC that a browser-style
// request and a request without the token change nothing, that the health
// listener serves probes and metrics but no API, and that the legitimate
// curl and gRPC calls work.
func TestRunProxyAdminGuarded(t *testing.T) {
	source, target := kafkatest.Pair(t)
	adminAddr, health := freeAddr(t), freeAddr(t)
	args := []string{"proxy",
		"--cluster", "source=" + strings.Join(source.Bootstrap, ","),
		"--cluster", "target=" + strings.Join(target.Bootstrap, ","),
		"--active", "source", "--listen", freeAddr(t), "--broker-port-base=-1",
		"--admin", adminAddr, "--health-listen", health, "--log-level", "warn",
	}
	r := startRun(t, args, map[string]string{"SWITCHYARD_ADMIN_TOKEN": "admin-s3cret"})
	ctx := t.Context()
	// Ready, by the probe the injector sets: the health listener.
	r.waitReady("http://" + health + "/readyz")

	send := func(method, url, contentType, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(header); i += 2 {
			if header[i] == "Host" {
				req.Host = header[i+1]
			} else {
				req.Header.Set(header[i], header[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	api := "http://" + adminAddr
	bearer := "Bearer admin-s3cret"
	for _, tc := range []struct {
		name                     string
		method, url, ctype, body string
		header                   []string
		want                     int
	}{
		{name: "text/plain switch", method: "POST", url: api + "/v1/switch", ctype: "text/plain", body: `{"cluster":"target"}`,
			header: []string{"Authorization", bearer}, want: 415},
		{name: "foreign origin gate", method: "PUT", url: api + "/v1/gates", ctype: "application/json", body: `{"apiKeys":[0],"mode":"REJECT"}`,
			header: []string{"Authorization", bearer, "Origin", "http://evil.example"}, want: 403},
		{name: "rebinding switch", method: "POST", url: api + "/v1/switch", ctype: "application/json", body: `{"cluster":"target"}`,
			header: []string{"Authorization", bearer, "Host", "rebind.evil.example"}, want: 403},
		{name: "switch without the token", method: "POST", url: api + "/v1/switch", ctype: "application/json", body: `{"cluster":"target"}`, want: 401},
		{name: "gate without the token", method: "PUT", url: api + "/v1/gates", ctype: "application/json", body: `{"apiKeys":[0],"mode":"REJECT"}`, want: 401},
		{name: "switch on the health listener", method: "POST", url: "http://" + health + "/v1/switch", ctype: "application/json", body: `{"cluster":"target"}`,
			header: []string{"Authorization", bearer}, want: 404},
		{name: "status on the health listener", method: "GET", url: "http://" + health + "/v1/status", header: []string{"Authorization", bearer}, want: 404},
		{name: "metrics on the health listener", method: "GET", url: "http://" + health + "/metrics", want: 200},
		{name: "healthz on the health listener", method: "GET", url: "http://" + health + "/healthz", want: 200},
	} {
		if code, body := send(tc.method, tc.url, tc.ctype, tc.body, tc.header...); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}

	conn, err := grpc.NewClient("passthrough:///"+adminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := switchyardv1.NewProxyAdminServiceClient(conn)
	if _, err := client.Switch(ctx, &switchyardv1.SwitchRequest{Cluster: "target"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC Switch without the token: %v, want Unauthenticated", err)
	}
	if _, err := client.SetGates(ctx, &switchyardv1.SetGatesRequest{ApiKeys: []int32{0}, Mode: "REJECT"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC SetGates without the token: %v, want Unauthenticated", err)
	}

	// Nothing moved.
	code, body := send("GET", api+"/v1/status", "", "", "Authorization", bearer)
	if code != 200 {
		t.Fatalf("GET /v1/status with the token: %d %s", code, body)
	}
	if st := jsonField(t, []byte(body), "status").(map[string]any); st["activeCluster"] != "source" || st["gate"] != nil {
		t.Fatalf("after the refused calls: active %v, gate %v; want source and no gate", st["activeCluster"], st["gate"])
	}

	// The legitimate calls: curl --json with the token, gRPC with it.
	if code, body := send("PUT", api+"/v1/gates", "application/json", `{"apiKeys":[0],"mode":"REJECT"}`, "Authorization", bearer); code != 200 {
		t.Errorf("PUT /v1/gates with the token: %d %s", code, body)
	}
	if code, body := send("DELETE", api+"/v1/gates", "", "", "Authorization", bearer); code != 200 {
		t.Errorf("DELETE /v1/gates with the token: %d %s", code, body)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", bearer)
	if resp, err := client.Switch(authed, &switchyardv1.SwitchRequest{Cluster: "target"}); err != nil || resp.GetReport().GetTo() != "target" {
		t.Errorf("gRPC Switch with the token: %v, %v", resp, err)
	}

	r.stop()
}

// TestRunRefusesExposedAdmin: `switchyard proxy` with the admin API on
// every interface and no credentials exits with a usage error naming the
// flag, before it serves anything. (The deadline only bounds a proxy that
// would, wrongly, start.)
func TestRunRefusesExposedAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stderr lockedBuffer
	code := run(ctx, []string{"proxy", "--cluster", "a=127.0.0.1:1", "--listen", "127.0.0.1:0", "--broker-port-base=-1",
		"--admin", "0.0.0.0:0"}, envOf(nil), io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "switchyard proxy: --admin 0.0.0.0:0: not a loopback address") {
		t.Errorf("run = %d, want 2 with an error naming --admin; stderr:\n%s", code, stderr.String())
	}
}
