package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

const (
	opsToken        = "ops-c81f3a2d9e07"
	dashboardsToken = "dash-47b9e1c0a3f5"
)

// secureFixture is certificate material and token files for a control
// plane serving TLS.
type secureFixture struct {
	dir                    string
	server, alice, mallory tlstest.Paths
	opsFile, dashFile      string
}

func newSecureFixture(t *testing.T) secureFixture {
	t.Helper()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "control-ca")
	sub := func(name string, is tlstest.Issued) tlstest.Paths {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return tlstest.Write(t, d, ca, is)
	}
	f := secureFixture{
		dir:      dir,
		server:   sub("server", ca.Localhost(t)),
		alice:    sub("alice", ca.Issue(t, tlstest.Leaf{CommonName: "alice", Client: true})),
		mallory:  sub("mallory", ca.Issue(t, tlstest.Leaf{CommonName: "mallory", Client: true})),
		opsFile:  filepath.Join(dir, "ops-token"),
		dashFile: filepath.Join(dir, "dash-token"),
	}
	for path, tok := range map[string]string{f.opsFile: opsToken, f.dashFile: dashboardsToken} {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// config is a control plane configuration: TLS with an optional client
// CA, two named tokens, alice's certificate as an operator, an audit file.
func (f secureFixture) config(listen string) string {
	return fmt.Sprintf(`listen: %s
storeDir: %s
readAuth: true
tokens:
  - {name: ops, role: operator, file: %s}
  - {name: dashboards, role: read-only, file: %s}
tls:
  certFile: %s
  keyFile: %s
  caFile: %s
  clientCertOptional: true
clientCertificates:
  - {identity: alice, role: operator}
auditFile: %s
clusters:
  - {name: source, bootstrap: ["127.0.0.1:1"]}
  - {name: target, bootstrap: ["127.0.0.1:2"]}
`, listen, filepath.Join(f.dir, "store"), f.opsFile, f.dashFile, f.server.Cert, f.server.Key, f.server.CA,
		filepath.Join(f.dir, "audit.jsonl"))
}

func (f secureFixture) writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertNoSecrets fails if s holds one of the fixture's tokens or a line of
// one of its private keys.
func (f secureFixture) assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, tok := range []string{opsToken, dashboardsToken} {
		if strings.Contains(s, tok) {
			t.Errorf("%s contains the token %s...", what, tok[:4])
		}
	}
	for _, p := range []tlstest.Paths{f.server, f.alice, f.mallory} {
		key, err := os.ReadFile(p.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(key), "\n") {
			if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(s, line) {
				t.Errorf("%s contains private key material of %s", what, p.Key)
			}
		}
	}
}

// startSecureControl runs the control plane from f's configuration (on a
// free loopback port) the way `switchyard control` does, until the test
// ends; it returns the address and the log.
func startSecureControl(t *testing.T, f secureFixture) (string, *lockedBuffer) {
	t.Helper()
	cfg, err := loadControlConfig(f.writeConfig(t, f.config("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.serverConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log, err := newLogger("debug", "json", logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serveControl(ctx, cfg, sc, ready, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("control plane did not stop within 20s of cancel")
		}
	})
	select {
	case addr := <-ready:
		return addr.String(), logs
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("control plane did not start within 20s")
	}
	return "", nil
}

// TestCtlOverTLS drives a real control plane serving TLS, with optional
// client certificates, through switchyard ctl: certificates and tokens
// give their roles, refusals and TLS failures say what to fix, and nothing
// secret reaches the output, the log or the audit file.
func TestCtlOverTLS(t *testing.T) {
	f := newSecureFixture(t)
	addr, logs := startSecureControl(t, f)
	tlsCA := []string{"--server", addr, "--tls-ca", f.server.CA}
	alice := append(append([]string{}, tlsCA...), "--tls-cert", f.alice.Cert, "--tls-key", f.alice.Key)
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		code       int
		wantStdout string
		wantStderr []string
	}{
		{name: "operator certificate", args: append([]string{"clusters"}, alice...), wantStdout: "source"},
		{name: "from the environment", args: []string{"clusters"}, env: map[string]string{envControlAddr: addr,
			envControlTLSCA: f.server.CA, envControlTLSCert: f.alice.Cert, envControlTLSKey: f.alice.Key}, wantStdout: "target"},
		{name: "read-only token reads", args: append([]string{"cutover", "list"}, tlsCA...),
			env: map[string]string{envControlToken: dashboardsToken}},
		{name: "read-only token may not abort", args: append([]string{"cutover", "abort", "c-x"}, tlsCA...),
			env: map[string]string{envControlToken: dashboardsToken}, code: 1,
			wantStderr: []string{"PERMISSION_DENIED: AbortCutover needs role operator; token dashboards has role read-only",
				"the token from " + envControlToken + " may not make this call"}},
		{name: "operator token aborts", args: append([]string{"cutover", "abort", "c-x", "--token-file", f.opsFile}, tlsCA...),
			code: 1, wantStderr: []string{`NOT_FOUND: no cutover "c-x"`}},
		{name: "operator certificate aborts", args: append([]string{"cutover", "abort", "c-y"}, alice...),
			code: 1, wantStderr: []string{`NOT_FOUND: no cutover "c-y"`}},
		{name: "unmapped certificate", args: []string{"clusters", "--server", addr, "--tls-ca", f.server.CA,
			"--tls-cert", f.mallory.Cert, "--tls-key", f.mallory.Key}, code: 1,
			wantStderr: []string{"PERMISSION_DENIED: ListClusters needs role read-only or operator; certificate mallory has role none",
				"the certificate from --tls-cert " + f.mallory.Cert}},
		{name: "no credentials", args: append([]string{"clusters"}, tlsCA...), code: 1,
			wantStderr: []string{"UNAUTHENTICATED: ListClusters needs credentials", "no token was sent"}},
		{name: "plaintext to a TLS server", args: []string{"clusters", "--server", addr}, code: 1,
			env:        map[string]string{envControlToken: opsToken},
			wantStderr: []string{"UNAVAILABLE", "if it serves TLS, give --tls-ca"}},
		{name: "wrong server name", args: append([]string{"clusters", "--tls-server-name", "control.example"}, alice...), code: 1,
			wantStderr: []string{"UNAVAILABLE", "certificate is valid for localhost, not control.example", "TLS with " + addr + " failed: check --tls-ca, --tls-server-name"}},
		{name: "certificate without key", args: append([]string{"clusters", "--tls-cert", f.alice.Cert}, tlsCA...), code: 2,
			wantStderr: []string{"--tls-key: must be set when --tls-cert is"}},
		{name: "missing CA file", args: []string{"clusters", "--server", addr, "--tls-ca", filepath.Join(f.dir, "nope.pem")}, code: 2,
			wantStderr: []string{"--tls-ca: open " + filepath.Join(f.dir, "nope.pem")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := ctlRun(t, tc.env, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tc.wantStdout)
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			f.assertNoSecrets(t, "ctl output", stdout+stderr)
		})
	}

	audit, err := os.ReadFile(filepath.Join(f.dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"who":"token dashboards","role":"read-only"`, `"method":"AbortCutover"`, `"outcome":"PermissionDenied"`,
		`"who":"certificate alice","role":"operator"`, `"outcome":"NotFound"`, `"who":"token ops"`} {
		if !strings.Contains(string(audit), w) {
			t.Errorf("audit file does not contain %s:\n%s", w, audit)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"audit"`) {
		t.Errorf("the log has no audit lines:\n%s", logs.String())
	}
	f.assertNoSecrets(t, "the audit file", string(audit))
	f.assertNoSecrets(t, "the control plane's log", logs.String())
}

// TestControlConfigErrors: `switchyard control` refuses a bad security
// configuration at start, exit code 2, naming the field, without quoting
// a token or a key.
func TestControlConfigErrors(t *testing.T) {
	f := newSecureFixture(t)
	good := f.config("127.0.0.1:0")
	missing := filepath.Join(f.dir, "missing.pem")
	sameToken := filepath.Join(f.dir, "same-token")
	if err := os.WriteFile(sameToken, []byte(opsToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		replace [2]string // in the good configuration
		want    []string
	}{
		{"missing certificate", [2]string{"certFile: " + f.server.Cert, "certFile: " + missing},
			[]string{"tls.certFile: open " + missing + ": no such file or directory"}},
		{"key of another certificate", [2]string{"keyFile: " + f.server.Key, "keyFile: " + f.alice.Key},
			[]string{"tls.certFile: load key pair", "private key does not match public key"}},
		{"key file is not a key", [2]string{"keyFile: " + f.server.Key, "keyFile: " + f.opsFile},
			[]string{"tls.certFile: load key pair"}},
		{"missing client CA", [2]string{"caFile: " + f.server.CA, "caFile: " + missing}, []string{"tls.caFile: open " + missing}},
		{"missing token file", [2]string{"file: " + f.dashFile, "file: " + missing}, []string{"tokens[1].file: open " + missing}},
		{"unknown role", [2]string{"role: read-only", "role: admin"}, []string{`tokens[1].role: role "admin": want sidecar, read-only or operator`}},
		{"token shared by two names", [2]string{"file: " + f.dashFile, "file: " + sameToken},
			[]string{"tokens[1] (dashboards): the same token as ops"}},
		{"unknown certificate role", [2]string{"{identity: alice, role: operator}", "{identity: alice, role: root}"},
			[]string{"clientCertificates[0].role"}},
		{"public without credentials", [2]string{good, "listen: 0.0.0.0:9180\nstoreDir: x\nclusters: [{name: a, bootstrap: [\"h:1\"]}, {name: b, bootstrap: [\"h:2\"]}]\n"},
			[]string{"listen: 0.0.0.0:9180 is not a loopback address"}},
		{"unknown field", [2]string{"clientCertOptional: true", "clientCertOptinal: true"}, []string{"clientCertOptinal"}},
		{"tokens over plaintext, not on loopback", [2]string{good, fmt.Sprintf("listen: 0.0.0.0:9180\ntokens: [{name: ops, role: operator, file: %s}]\n"+
			"storeDir: x\nclusters: [{name: a, bootstrap: [\"h:1\"]}, {name: b, bootstrap: [\"h:2\"]}]\n", f.opsFile)},
			[]string{"tokenFile, tokens: listen 0.0.0.0:9180 is not a loopback address and serves no TLS", "allowPlaintextTokens"}},
		{"sidecar token without apps", [2]string{"role: read-only", "role: sidecar"}, []string{"tokens[1].apps: required for role sidecar"}},
		{"negative limit", [2]string{"readAuth: true", "readAuth: true\nlimits: {sidecarsPerCredential: -1, messageBytes: 1024}"},
			[]string{"limits.sidecarsPerCredential: -1 must not be negative", "limits.messageBytes: 1024: want 16 KiB to 64 MiB"}},
		{"allowed host with a scheme", [2]string{"readAuth: true", "readAuth: true\nallowedHosts: [\"http://x\"]"},
			[]string{`allowedHosts[0]: "http://x": want a host name`}},
		{"instances of an operator token", [2]string{"{name: ops, role: operator,", `{name: ops, role: operator, instances: ["shop/*"],`},
			[]string{"tokens[0].instances: only for role sidecar"}},
		{"apps of an operator certificate", [2]string{"{identity: alice, role: operator}", "{identity: alice, role: operator, apps: [orders]}"},
			[]string{"clientCertificates[0].apps: only for role sidecar"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.Replace(good, tc.replace[0], tc.replace[1], 1)
			if body == good {
				t.Fatalf("%q is not in the configuration", tc.replace[0])
			}
			path := f.writeConfig(t, body)
			var stdout, stderr lockedBuffer
			code := run(context.Background(), []string{"control", "--config", path}, envOf(nil), &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
			f.assertNoSecrets(t, "stderr", stderr.String())
		})
	}
}

func TestSplitControlTLSFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		want     tlsfiles.Files
		wantRest []string
		err      string
	}{
		{name: "none", args: []string{"--cluster", "a=h:1"}, wantRest: []string{"--cluster", "a=h:1"}},
		{name: "separate and joined values, one or two dashes",
			args: []string{"--control", "c:1", "--control-tls-ca", "ca.pem", "-control-tls-cert=c.pem", "--control-tls-key=k.pem", "--app", "x", "-control-tls-server-name", "cp"},
			want: tlsfiles.Files{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "cp"}, wantRest: []string{"--control", "c:1", "--app", "x"}},
		{name: "environment, flag wins", args: []string{"--control-tls-ca", "flag.pem"},
			env:  map[string]string{"SWITCHYARD_CONTROL_TLS_CA": "env.pem", "SWITCHYARD_CONTROL_TLS_SERVER_NAME": "cp"},
			want: tlsfiles.Files{CAFile: "flag.pem", ServerName: "cp"}, wantRest: nil},
		{name: "after --", args: []string{"--", "--control-tls-ca", "x"}, wantRest: []string{"--", "--control-tls-ca", "x"}},
		{name: "similar names are not ours", args: []string{"--control-tls-cab", "x", "--control-token-file", "t"},
			wantRest: []string{"--control-tls-cab", "x", "--control-token-file", "t"}},
		{name: "missing value", args: []string{"--app", "x", "--control-tls-ca"}, err: "flag needs an argument: --control-tls-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rest, err := splitControlTLSFlags(tc.args, envOf(tc.env))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || !reflect.DeepEqual(rest, tc.wantRest) {
				t.Fatalf("got %+v, rest %q; want %+v, rest %q", got, rest, tc.want, tc.wantRest)
			}
		})
	}
}

// TestProxyControlTLSErrors: `switchyard proxy` checks the control
// client's TLS files at start, naming the flag.
func TestProxyControlTLSErrors(t *testing.T) {
	f := newSecureFixture(t)
	missing := filepath.Join(f.dir, "missing.pem")
	base := []string{"proxy", "--cluster", "a=127.0.0.1:1", "--control", "127.0.0.1:9180", "--app", "orders"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing CA", append(append([]string{}, base...), "--control-tls-ca", missing), "--control-tls-ca: open " + missing},
		{"mismatched key", append(append([]string{}, base...), "--control-tls-cert", f.alice.Cert, "--control-tls-key", f.mallory.Key),
			"--control-tls-cert: load key pair"},
		{"key without certificate", append(append([]string{}, base...), "--control-tls-key", f.alice.Key),
			"--control-tls-cert: must be set when --control-tls-key is"},
		{"without a control plane", []string{"proxy", "--cluster", "a=127.0.0.1:1", "--control-tls-ca", f.server.CA},
			"--control-tls-*: need a control plane (--control)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr lockedBuffer
			code := run(context.Background(), tc.args, envOf(nil), &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit code %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
			f.assertNoSecrets(t, "stderr", stderr.String())
		})
	}
	var stdout, stderr lockedBuffer
	if code := run(context.Background(), []string{"proxy", "--help"}, envOf(nil), &stdout, &stderr); code != 0 ||
		!strings.Contains(stderr.String(), "-control-tls-server-name name") {
		t.Fatalf("proxy --help: exit code %d, does not list -control-tls-server-name:\n%s", code, stderr.String())
	}
}

// TestProxyControlTokenOverTLS: a token to a control plane off loopback is
// accepted with TLS to it (the --control-tls-* flags count), and refused
// without.
func TestProxyControlTokenOverTLS(t *testing.T) {
	f := newSecureFixture(t)
	args := []string{"--cluster", "a=127.0.0.1:1", "--control", "switchyard-control.switchyard:9180", "--app", "orders"}
	env := envOf(map[string]string{"SWITCHYARD_CONTROL_TOKEN": opsToken})
	o, err := parseProxyOptions(append(slices.Clone(args), "--control-tls-ca", f.server.CA), env, io.Discard)
	if err != nil {
		t.Fatalf("a token over TLS: %v", err)
	}
	if o.Control.TLS.CAFile != f.server.CA || o.Control.Token != opsToken {
		t.Errorf("control client TLS %+v, token set %t; want the CA and the token", o.Control.TLS, o.Control.Token != "")
	}
	_, err = parseProxyOptions(args, env, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "control token: not sent in the clear") {
		t.Fatalf("a token without TLS: %v, want it refused", err)
	}
	f.assertNoSecrets(t, "the error", err.Error())
}

// TestControlSidecarCredentials: the sidecar credentials' apps and
// bindInstance, and allowPlaintextTokens, reach the server's configuration.
func TestControlSidecarCredentials(t *testing.T) {
	f := newSecureFixture(t)
	body := strings.Replace(f.config("0.0.0.0:9180"), "clientCertificates:\n",
		"clientCertificates:\n  - {identity: \"spiffe://cluster.local/pods/*\", role: sidecar, apps: [orders, \"pay*\"], bindInstance: true}\n", 1)
	body = strings.Replace(body, "  - {name: dashboards, role: read-only, file: ", "  - {name: dashboards, role: sidecar, apps: [orders], file: ", 1)
	body += "allowPlaintextTokens: true\n"
	cfg, err := loadControlConfig(f.writeConfig(t, body))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.serverConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := sc.Tokens[1]; got.Role != control.RoleSidecar || !reflect.DeepEqual(got.Apps, []string{"orders"}) {
		t.Errorf("tokens[1]: role %v apps %v, want sidecar of [orders]", got.Role, got.Apps)
	}
	want := control.ClientCertificate{Identity: "spiffe://cluster.local/pods/*", Role: control.RoleSidecar, Apps: []string{"orders", "pay*"}, BindInstance: true}
	if got := sc.ClientCertificates[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("clientCertificates[0]: %+v, want %+v", got, want)
	}
	if !sc.AllowPlaintextTokens {
		t.Error("allowPlaintextTokens: not set")
	}
}
