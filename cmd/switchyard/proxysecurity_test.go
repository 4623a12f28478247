package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/proxy"
)

// TestProxyConfigSecurity: TLS, SASL and client authentication come from
// the config file, survive a --cluster flag naming the same cluster, and
// are validated with errors that name the field and never the secret.
func TestProxyConfigSecurity(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("very-secret-pw\n"), 0o600)
	users := filepath.Join(dir, "users.yaml")
	os.WriteFile(users, []byte("users:\n  app: local-secret\n"), 0o600)
	body := `
active: onprem
clusters:
  - name: onprem
    bootstrap: [kafka-a:9092]
  - name: msk
    bootstrap: [b-1.msk.example:9096]
    tls: {enabled: true}
    sasl: {mechanism: SCRAM-SHA-512, username: app, passwordFile: ` + pw + `}
clientAuth:
  mode: terminate
  usersFile: ` + users + `
`
	path := writeConfig(t, body)
	opts, err := parseProxyOptions([]string{"--config", path, "--cluster", "onprem=kafka-a:9092", "--cluster", "msk=b-2.msk.example:9096"},
		envOf(nil), io.Discard)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var msk proxy.ClusterConfig
	for _, c := range opts.Proxy.Clusters {
		if c.Name == "msk" {
			msk = c
		}
	}
	if msk.Bootstrap[0] != "b-2.msk.example:9096" || !msk.TLS.Enabled || msk.SASL.Mechanism != "SCRAM-SHA-512" || msk.SASL.PasswordFile != pw {
		t.Errorf("msk cluster after --cluster: %+v (%s)", msk.Bootstrap, msk.Config)
	}
	if opts.Proxy.ClientAuth.Mode != proxy.ClientAuthTerminate || len(opts.Proxy.ClientAuth.Mechanisms) != 3 {
		t.Errorf("clientAuth: %+v", opts.Proxy.ClientAuth)
	}
	// What the file's clientAuth leaves out keeps its default; what it
	// sets, even to zero, applies.
	def := proxy.DefaultConfig().ClientAuth
	if got := opts.Proxy.ClientAuth; got.MaxPreAuthFrameBytes != def.MaxPreAuthFrameBytes || got.FailedAuthDelay != def.FailedAuthDelay ||
		got.MaxFailedAuths != def.MaxFailedAuths || got.FailedAuthWindow != def.FailedAuthWindow {
		t.Errorf("clientAuth limits: %+v, want the defaults %+v", got, def)
	}
	tuned := body + "  maxPreAuthFrameBytes: 65536\n  failedAuthDelay: 0s\n  maxFailedAuths: 3\n"
	opts, err = parseProxyOptions([]string{"--config", writeConfig(t, tuned)}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got := opts.Proxy.ClientAuth; got.MaxPreAuthFrameBytes != 65536 || got.FailedAuthDelay != 0 || got.MaxFailedAuths != 3 || got.FailedAuthWindow != def.FailedAuthWindow {
		t.Errorf("clientAuth limits from the file: %+v", got)
	}

	for _, tc := range []struct{ yaml, want string }{
		{strings.Replace(body, "passwordFile: "+pw, "passwordFile: "+pw+".missing", 1), "clusters[1] (msk).sasl.passwordFile: open"},
		{strings.Replace(body, "SCRAM-SHA-512", "GSSAPI", 1), "clusters[1] (msk).sasl.mechanism: \"GSSAPI\""},
		{strings.Replace(body, "passwordFile: "+pw, "password: inline-secret-123, passwordFile: "+pw, 1), "exactly one of password and passwordFile"},
		{strings.Replace(body, "mode: terminate", "mode: sideways", 1), "clientAuth.mode: \"sideways\""},
		{body + "  maxPreAuthFrameBytes: 10\n", "clientAuth.maxPreAuthFrameBytes: 10"},
		{body + "  failedAuthDelay: -1s\n", "clientAuth.failedAuthDelay: -1s"},
	} {
		_, err := parseProxyOptions([]string{"--config", writeConfig(t, tc.yaml)}, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
			continue
		}
		for _, secret := range []string{"very-secret-pw", "inline-secret-123", "local-secret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows a secret", err)
			}
		}
	}
}

// TestVerifyTakesTheMirrorConfig: `verify --config mirror.yaml` takes the
// clusters, their security, the name and the prefix from the mirror's file.
func TestVerifyTakesTheMirrorConfig(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("x\n"), 0o600)
	path := writeConfig(t, `
name: orders
sourceBootstrap: [kafka-1:9092]
targetBootstrap: [b-1.msk.example:9096]
targetSecurity:
  tls: {enabled: true}
  sasl: {mechanism: SCRAM-SHA-512, username: mirror, passwordFile: `+pw+`}
topics: {include: ["orders"], prefix: "dc1."}
`)
	cfg, err := parseVerifyOptions([]string{"--config", path}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mirror != "orders" || cfg.TargetPrefix != "dc1." || cfg.TargetBootstrap[0] != "b-1.msk.example:9096" ||
		!cfg.Target.TLS.Enabled || cfg.Target.SASL.Mechanism != "SCRAM-SHA-512" || cfg.Source.Enabled() {
		t.Errorf("verify config from the mirror file: %+v", cfg)
	}
	cfg, err = parseVerifyOptions([]string{"--config", path, "--mirror", "other", "--target", "b-2:9096"}, envOf(nil), io.Discard)
	if err != nil || cfg.Mirror != "other" || cfg.TargetBootstrap[0] != "b-2:9096" || !cfg.Target.TLS.Enabled {
		t.Errorf("flags over the file: %+v, %v", cfg, err)
	}
}

// TestProxyLimitOptions: the limits come from the file, the environment
// and flags, and bad values name the option.
func TestProxyLimitOptions(t *testing.T) {
	path := writeConfig(t, `
clusters: [{name: a, bootstrap: ["kafka:9092"]}]
maxConnections: 50
maxInflightPerConnection: 8
idleTimeout: 2m
clientIOTimeout: 5s
maxHeldBytes: 1048576
maxVirtualBrokers: 64
routing: broker
`)
	opts, err := parseProxyOptions([]string{"--config", path, "--max-connections", "60", "--stop-timeout", "2s"},
		envOf(map[string]string{"SWITCHYARD_IDLE_TIMEOUT": "3m"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := opts.Proxy
	if p.MaxConnections != 60 || p.MaxInflightPerConnection != 8 || p.IdleTimeout != 3*time.Minute ||
		p.ClientIOTimeout != 5*time.Second || p.MaxHeldBytes != 1<<20 || p.MaxVirtualBrokers != 64 || p.StopTimeout != 2*time.Second ||
		p.Routing != proxy.RoutingBroker {
		t.Errorf("limits: %+v", p)
	}
	for args, want := range map[string]string{
		"--max-connections=0":             "maxConnections: 0 must be at least 1",
		"--max-inflight-per-connection=x": "--max-inflight-per-connection",
		"--client-io-timeout=-1s":         "clientIOTimeout",
		"--max-held-bytes=0":              "maxHeldBytes",
		"--max-virtual-brokers=0":         "maxVirtualBrokers: 0 must be at least 1",
		"--stop-timeout=0s":               "stopTimeout",
		"--routing=nearest":               `routing: "nearest" is not "leader" or "broker"`,
	} {
		_, err := parseProxyOptions([]string{"--config", path, args}, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", args, err, want)
		}
	}
}
