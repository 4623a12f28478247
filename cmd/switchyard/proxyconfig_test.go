package main

import (
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// fileYAML is a configuration file that sets something for every option the
// precedence test looks at.
const fileYAML = `
listen: 127.0.0.1:19092
admin: 127.0.0.1:19190
active: b
clusters:
  - name: a
    bootstrap: [kafka-a:9092]
  - name: b
    bootstrap: [kafka-b1:9092, kafka-b2:9092]
forbiddenApiKeys: [0]
drainTimeout: 7s
holdBudget: 700ms
maxHold: 20s
maxFrameBytes: 2048
logLevel: debug
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestParseProxyOptionsPrecedence: defaults < YAML file < SWITCHYARD_*
// environment < flags, option by option; an option a layer does not set
// keeps the value of the layer below.
func TestParseProxyOptionsPrecedence(t *testing.T) {
	path := writeConfig(t, fileYAML)
	type want struct {
		listen, admin, active string
		clusters              []proxy.ClusterConfig
		gate                  proxy.Gate
		drain, hold, maxHold  time.Duration
		maxFrame              int32
		logLevel              string
	}
	fromFile := want{
		listen: "127.0.0.1:19092", admin: "127.0.0.1:19190", active: "b",
		clusters: []proxy.ClusterConfig{
			{Name: "a", Bootstrap: []string{"kafka-a:9092"}},
			{Name: "b", Bootstrap: []string{"kafka-b1:9092", "kafka-b2:9092"}},
		},
		gate:  proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateReject},
		drain: 7 * time.Second, hold: 700 * time.Millisecond, maxHold: 20 * time.Second, maxFrame: 2048, logLevel: "debug",
	}
	fullEnv := map[string]string{
		"SWITCHYARD_LISTEN":             "127.0.0.1:29092",
		"SWITCHYARD_CLUSTER":            "c=kafka-c:9092; d=kafka-d1:9092,kafka-d2:9092",
		"SWITCHYARD_ACTIVE":             "d",
		"SWITCHYARD_FORBIDDEN_API_KEYS": "0, 1",
		"SWITCHYARD_DRAIN_TIMEOUT":      "5s",
		"SWITCHYARD_MAX_HOLD":           "15s",
	}
	fromEnv := fromFile
	fromEnv.listen, fromEnv.active, fromEnv.drain, fromEnv.maxHold = "127.0.0.1:29092", "d", 5*time.Second, 15*time.Second
	fromEnv.clusters = []proxy.ClusterConfig{
		{Name: "c", Bootstrap: []string{"kafka-c:9092"}},
		{Name: "d", Bootstrap: []string{"kafka-d1:9092", "kafka-d2:9092"}},
	}
	fromEnv.gate = proxy.Gate{APIKeys: []int16{0, 1}, Mode: proxy.GateReject}
	fromFlags := fromEnv
	fromFlags.listen, fromFlags.active, fromFlags.drain, fromFlags.logLevel = "127.0.0.1:39092", "e", 3*time.Second, "warn"
	fromFlags.maxHold = 12 * time.Second
	fromFlags.clusters = []proxy.ClusterConfig{
		{Name: "e", Bootstrap: []string{"kafka-e:9092"}},
		{Name: "f", Bootstrap: []string{"kafka-f1:9092", "kafka-f2:9092"}},
	}
	fromFlags.gate = proxy.Gate{APIKeys: []int16{8}, Mode: proxy.GateReject}
	flagArgs := []string{"--config", path, "--listen", "127.0.0.1:39092", "--cluster", "e=kafka-e:9092",
		"--cluster", "f=kafka-f1:9092,kafka-f2:9092", "--active", "e", "--forbidden-api-keys", "8",
		"--drain-timeout=3s", "--log-level", "warn", "--max-hold", "12s"}
	noGate := fromFile
	noGate.gate = proxy.Gate{}

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want want
	}{
		{
			name: "defaults",
			args: []string{"--cluster", "only=kafka:9092"},
			want: want{
				listen: "127.0.0.1:9092", admin: "127.0.0.1:9190", active: "only",
				clusters: []proxy.ClusterConfig{{Name: "only", Bootstrap: []string{"kafka:9092"}}},
				drain:    10 * time.Second, hold: 10 * time.Second, maxHold: 18 * time.Second, maxFrame: 100 << 20, logLevel: "info",
			},
		},
		{name: "file over defaults", args: []string{"--config", path}, want: fromFile},
		{name: "file named by SWITCHYARD_CONFIG", env: map[string]string{"SWITCHYARD_CONFIG": path}, want: fromFile},
		{name: "env over file", args: []string{"--config", path}, env: fullEnv, want: fromEnv},
		{name: "flags over env", args: flagArgs, env: fullEnv, want: fromFlags},
		{
			name: "--config over SWITCHYARD_CONFIG",
			args: []string{"--config", path},
			env:  map[string]string{"SWITCHYARD_CONFIG": filepath.Join(t.TempDir(), "absent.yaml")},
			want: fromFile,
		},
		{name: "empty --forbidden-api-keys clears the file's gate", args: []string{"--config", path, "--forbidden-api-keys="}, want: noGate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseProxyOptions(tt.args, envOf(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseProxyOptions: %v", err)
			}
			w := tt.want
			check := func(field string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", field, got, want)
				}
			}
			check("listen", o.Proxy.Listen, w.listen)
			check("admin", o.Admin.Listen, w.admin)
			check("active", o.Proxy.Active, w.active)
			check("drain timeout", o.Proxy.DrainTimeout, w.drain)
			check("hold budget", o.Proxy.HoldBudget, w.hold)
			check("max hold", o.Proxy.MaxHold, w.maxHold)
			check("max frame bytes", o.Proxy.MaxFrameBytes, w.maxFrame)
			check("log level", o.LogLevel, w.logLevel)
			check("gate mode", o.Proxy.Gate.Mode, w.gate.Mode)
			if !slices.Equal(o.Proxy.Gate.APIKeys, w.gate.APIKeys) {
				t.Errorf("gate keys = %v, want %v", o.Proxy.Gate.APIKeys, w.gate.APIKeys)
			}
			if !slices.EqualFunc(o.Proxy.Clusters, w.clusters, func(a, b proxy.ClusterConfig) bool {
				return a.Name == b.Name && slices.Equal(a.Bootstrap, b.Bootstrap)
			}) {
				t.Errorf("clusters = %+v, want %+v", o.Proxy.Clusters, w.clusters)
			}
		})
	}
}

// TestParseProxyStateLimits: the producer-id and transaction limits come
// from the file, the environment and flags, in that precedence.
func TestParseProxyStateLimits(t *testing.T) {
	path := writeConfig(t, "clusters: [{name: a, bootstrap: [kafka:9092]}]\nproducerIdExpiry: 2h\nmaxProducerIds: 500\nmaxTransactionTimeout: 30m\n")
	o, err := parseProxyOptions([]string{"--config", path, "--max-producer-ids", "700"},
		envOf(map[string]string{"SWITCHYARD_PRODUCER_ID_EXPIRY": "3h"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Proxy.ProducerIDExpiry != 3*time.Hour || o.Proxy.MaxProducerIDs != 700 || o.Proxy.MaxTransactionTimeout != 30*time.Minute {
		t.Errorf("producerIdExpiry %v, maxProducerIds %d, maxTransactionTimeout %v; want 3h (env), 700 (flag), 30m (file)",
			o.Proxy.ProducerIDExpiry, o.Proxy.MaxProducerIDs, o.Proxy.MaxTransactionTimeout)
	}
	d := proxy.DefaultConfig()
	if d.ProducerIDExpiry != 24*time.Hour || d.MaxTransactionTimeout != 15*time.Minute {
		t.Errorf("defaults: producerIdExpiry %v, maxTransactionTimeout %v; want Kafka's 24h and 15m", d.ProducerIDExpiry, d.MaxTransactionTimeout)
	}
}

// TestParseProxyOptionsErrors: every configuration error is a usage error
// (exit code 2) whose message names the flag, variable or field at fault.
func TestParseProxyOptionsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		yaml string // written to a file passed with --config when set
		want []string
		is   error
	}{
		{name: "no cluster", want: []string{"clusters", "at least one"}},
		{name: "cluster without =", args: []string{"--cluster", "kafka:9092"}, want: []string{"--cluster", `"kafka:9092"`, "name=host:port"}},
		{name: "cluster without a name", args: []string{"--cluster", "=kafka:9092"}, want: []string{"--cluster", "name=host:port"}},
		{name: "cluster without = in SWITCHYARD_CLUSTER", env: map[string]string{"SWITCHYARD_CLUSTER": "a=kafka:9092;b"}, want: []string{"SWITCHYARD_CLUSTER", `"b"`}},
		{name: "bad port", args: []string{"--cluster", "a=kafka:99999"}, want: []string{"clusters[0] (a).bootstrap", "kafka:99999", "bad port"}},
		{name: "non-numeric port in SWITCHYARD_CLUSTER", env: map[string]string{"SWITCHYARD_CLUSTER": "a=kafka:9092;b=kafka:x"}, want: []string{"clusters[1] (b).bootstrap", "bad port"}},
		{name: "bad listen port", args: []string{"--cluster", "a=kafka:9092", "--listen", "127.0.0.1:70000"}, want: []string{"listen", "bad port"}},
		{name: "unknown YAML field", yaml: "listn: 127.0.0.1:9092\n", want: []string{"config file", "listn"}},
		{name: "unknown YAML field in a cluster", yaml: "clusters:\n  - name: a\n    bootstrp: [kafka:9092]\n", want: []string{"bootstrp"}},
		{name: "bad duration in YAML", yaml: "clusters: [{name: a, bootstrap: [kafka:9092]}]\ndrainTimeout: soon\n", want: []string{"soon"}},
		{
			name: "bad duration in env",
			args: []string{"--cluster", "a=kafka:9092"},
			env:  map[string]string{"SWITCHYARD_DRAIN_TIMEOUT": "5"},
			want: []string{"SWITCHYARD_DRAIN_TIMEOUT", `"5"`},
		},
		{name: "bad duration flag", args: []string{"--cluster", "a=kafka:9092", "--hold-budget", "forever"}, want: []string{"--hold-budget", "forever"}},
		{name: "active names an unknown cluster", args: []string{"--cluster", "a=kafka:9092", "--active", "zz"}, want: []string{"active", `"zz"`}, is: proxy.ErrUnknownCluster},
		{name: "active missing with two clusters", args: []string{"--cluster", "a=kafka:9092", "--cluster", "b=kafka:9093"}, want: []string{"active", "required"}},
		{name: "API key not a number", args: []string{"--cluster", "a=kafka:9092", "--forbidden-api-keys", "0,x"}, want: []string{"--forbidden-api-keys", `"x"`}},
		{name: "max frame bytes beyond int32", args: []string{"--cluster", "a=kafka:9092", "--max-frame-bytes", "9999999999"}, want: []string{"--max-frame-bytes"}},
		{name: "max frame bytes below the minimum", args: []string{"--cluster", "a=kafka:9092", "--max-frame-bytes", "10"}, want: []string{"maxFrameBytes", "1024"}},
		{name: "log format", args: []string{"--cluster", "a=kafka:9092", "--log-format", "xml"}, want: []string{"log-format", "xml"}},
		{name: "no producer ids", args: []string{"--cluster", "a=kafka:9092", "--max-producer-ids", "0"}, want: []string{"maxProducerIds", "at least 1"}},
		{name: "negative producer id expiry", yaml: "clusters: [{name: a, bootstrap: [kafka:9092]}]\nproducerIdExpiry: -1s\n", want: []string{"producerIdExpiry", "positive"}},
		{name: "bad transaction timeout", env: map[string]string{"SWITCHYARD_CLUSTER": "a=kafka:9092", "SWITCHYARD_MAX_TRANSACTION_TIMEOUT": "0s"}, want: []string{"maxTransactionTimeout"}},
		{name: "unexpected argument", args: []string{"--cluster", "a=kafka:9092", "extra"}, want: []string{"unexpected argument", "extra"}},
		{name: "unknown flag", args: []string{"--clusters", "a=kafka:9092"}, want: []string{"-clusters"}},
		{name: "missing config file", args: []string{"--config", "/nonexistent/proxy.yaml"}, want: []string{"config file", "/nonexistent/proxy.yaml"}},
		{name: "control plane without an app", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300"}, want: []string{"app", "required", "--app"}},
		{name: "control plane address without a port", args: []string{"--cluster", "a=kafka:9092", "--control", "control", "--app", "o"}, want: []string{"control address", "host:port", "missing port"}},
		{name: "label without =", args: []string{"--cluster", "a=kafka:9092", "--label", "role"}, want: []string{"--label", `"role"`, "key=value"}},
		{name: "label given twice", env: map[string]string{"SWITCHYARD_CLUSTER": "a=kafka:9092", "SWITCHYARD_LABEL": "role=a,role=b"}, want: []string{"SWITCHYARD_LABEL", `"role"`, "twice"}},
		{name: "label with a bad value", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--label", "role=a b"}, want: []string{"labels", "role", `"a b"`}},
		{name: "instance with a space", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--instance", "pod 1"}, want: []string{"instance", `"pod 1"`}},
		{name: "bad control wait", args: []string{"--cluster", "a=kafka:9092", "--control-wait", "long"}, want: []string{"--control-wait", `"long"`}},
		{name: "negative control wait", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--control-wait=-1s"}, want: []string{"control-wait", "negative"}},
		{name: "zero status interval", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--control-status-interval", "0s"}, want: []string{"control-status-interval", "positive"}},
		{name: "missing token file", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--control-token-file", "/nonexistent/token"}, want: []string{"control-token-file", "/nonexistent/token"}},
		{name: "empty token file", args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o", "--control-token-file", os.DevNull}, want: []string{"control-token-file", "empty"}},
		{
			name: "token and token file in the environment",
			args: []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "o"},
			env:  map[string]string{"SWITCHYARD_CONTROL_TOKEN": "t", "SWITCHYARD_CONTROL_TOKEN_FILE": "/x"},
			want: []string{"SWITCHYARD_CONTROL_TOKEN and SWITCHYARD_CONTROL_TOKEN_FILE"},
		},
		{
			name: "token in plaintext off loopback",
			args: []string{"--cluster", "a=kafka:9092", "--control", "switchyard-control:9300", "--app", "o"},
			env:  map[string]string{"SWITCHYARD_CONTROL_TOKEN": "t"},
			want: []string{"control token: not sent in the clear to switchyard-control:9300", "allowPlaintextToken"},
		},
		{
			name: "plaintext token permission not a bool",
			args: []string{"--cluster", "a=kafka:9092"},
			env:  map[string]string{"SWITCHYARD_CONTROL_ALLOW_PLAINTEXT_TOKEN": "please"},
			want: []string{"SWITCHYARD_CONTROL_ALLOW_PLAINTEXT_TOKEN", `"please"`},
		},
		{name: "unknown YAML control field", yaml: "clusters: [{name: a, bootstrap: [kafka:9092]}]\nlables: {role: x}\n", want: []string{"lables"}},
		{name: "labels not a map in YAML", yaml: "clusters: [{name: a, bootstrap: [kafka:9092]}]\nlabels: [role]\n", want: []string{"config file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"--config", writeConfig(t, tt.yaml)}, args...)
			}
			_, err := parseProxyOptions(args, envOf(tt.env), io.Discard)
			if err == nil {
				t.Fatalf("parseProxyOptions(%q, %v): no error", args, tt.env)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("error %q (%T) is not a usage error", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
		})
	}
}

// TestParseProxyOptionsControl: the control-plane options follow the same
// precedence as the others (file < environment < flags), the token comes
// from a file or SWITCHYARD_CONTROL_TOKEN, and the instance defaults to the
// pod the injector names, else the host name. Without --control nothing
// about them is required, so the injector's SWITCHYARD_APP alone is fine.
func TestParseProxyOptionsControl(t *testing.T) {
	dir := t.TempDir()
	tokenFile := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fileToken := tokenFile("file-token", "tok-file\n")
	flagToken := tokenFile("flag-token", "  tok-flag\n")
	envToken := tokenFile("env-token", "tok-env-file")
	path := writeConfig(t, `
clusters: [{name: a, bootstrap: [kafka-a:9092]}]
control: control-file:9300
app: orders-file
instance: i-file
labels: {role: file, tier: gold}
controlTokenFile: `+fileToken+`
controlWait: 3s
controlStatusInterval: 2s
controlAllowPlaintextToken: true
`)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		address, app, instance, token string
		labels                        map[string]string
		wait, interval                time.Duration
		plaintext                     bool
	}
	fromFile := want{
		address: "control-file:9300", app: "orders-file", instance: "i-file", token: "tok-file",
		labels: map[string]string{"role": "file", "tier": "gold"}, wait: 3 * time.Second, interval: 2 * time.Second,
		plaintext: true,
	}
	env := map[string]string{
		"SWITCHYARD_CONTROL":       "control-env:9300",
		"SWITCHYARD_APP":           "orders-env",
		"SWITCHYARD_LABEL":         "role=env, zone=b",
		"SWITCHYARD_CONTROL_TOKEN": " tok-env ",
		"SWITCHYARD_CONTROL_WAIT":  "4s",
	}
	fromEnv := fromFile
	fromEnv.address, fromEnv.app, fromEnv.token, fromEnv.wait = "control-env:9300", "orders-env", "tok-env", 4*time.Second
	fromEnv.labels = map[string]string{"role": "env", "zone": "b"}
	fromFlags := fromEnv
	fromFlags.address, fromFlags.app, fromFlags.instance, fromFlags.token = "control-flag:9300", "orders-flag", "i-flag", "tok-flag"
	fromFlags.labels = map[string]string{"role": "flag", "canary": ""}
	fromFlags.wait, fromFlags.interval = 0, 500*time.Millisecond
	flags := []string{"--config", path, "--control", "control-flag:9300", "--app", "orders-flag", "--instance", "i-flag",
		"--label", "role=flag", "--label", "canary=", "--control-token-file", flagToken,
		"--control-wait", "0s", "--control-status-interval", "500ms"}
	defaults := controlclient.DefaultConfig()
	minimal := []string{"--cluster", "a=kafka:9092", "--control", "c:9300", "--app", "orders"}
	minimalWant := func(instance string) want {
		return want{address: "c:9300", app: "orders", instance: instance, wait: defaults.StartupWait, interval: defaults.StatusInterval}
	}
	envFileToken := minimalWant(host)
	envFileToken.token, envFileToken.plaintext = "tok-env-file", true
	loopbackToken := minimalWant(host)
	loopbackToken.address, loopbackToken.token = "127.0.0.1:9300", "tok-env"

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want want
	}{
		{
			name: "no control plane: the injector's variables are ignored",
			args: []string{"--cluster", "a=kafka:9092"},
			env:  map[string]string{"SWITCHYARD_APP": "orders", "SWITCHYARD_POD_NAME": "orders-0"},
			want: want{app: "orders", wait: defaults.StartupWait, interval: defaults.StatusInterval},
		},
		{name: "file", args: []string{"--config", path}, want: fromFile},
		{name: "env over file", args: []string{"--config", path}, env: env, want: fromEnv},
		{name: "flags over env", args: flags, env: env, want: fromFlags},
		{name: "instance from the injector's pod variables", args: minimal,
			env: map[string]string{"SWITCHYARD_POD_NAME": "orders-7d9f", "SWITCHYARD_POD_NAMESPACE": "shop"}, want: minimalWant("shop/orders-7d9f")},
		{name: "instance from the pod name alone", args: minimal, env: map[string]string{"SWITCHYARD_POD_NAME": "orders-7d9f"}, want: minimalWant("orders-7d9f")},
		{name: "instance from the host name", args: minimal, want: minimalWant(host)},
		{name: "token file from the environment, plaintext allowed by the environment", args: minimal,
			env: map[string]string{"SWITCHYARD_CONTROL_TOKEN_FILE": envToken, "SWITCHYARD_CONTROL_ALLOW_PLAINTEXT_TOKEN": "true"}, want: envFileToken},
		{name: "token in plaintext to loopback", args: []string{"--cluster", "a=kafka:9092", "--control", "127.0.0.1:9300", "--app", "orders"},
			env: map[string]string{"SWITCHYARD_CONTROL_TOKEN": "tok-env"}, want: loopbackToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseProxyOptions(tt.args, envOf(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseProxyOptions: %v", err)
			}
			c, w := o.Control, tt.want
			got := want{c.Address, c.App, c.Instance, c.Token, c.Labels, c.StartupWait, c.StatusInterval, c.AllowPlaintextToken}
			if got.address != w.address || got.app != w.app || got.instance != w.instance || got.token != w.token ||
				!maps.Equal(got.labels, w.labels) || got.wait != w.wait || got.interval != w.interval || got.plaintext != w.plaintext {
				t.Errorf("control options\n got %+v\nwant %+v", got, w)
			}
		})
	}
}
