package injector

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var update = flag.Bool("update", false, "rewrite the *.patched.json golden files")

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Image = "registry.example.com/switchyard:0.1.0"
	return cfg
}

// testControlAddress is the control plane the Helm chart points sidecars
// at (release "sy" in namespace "switchyard").
const testControlAddress = "sy-switchyard-control.switchyard.svc:9180"

// controlConfig is testConfig with a control plane, as the chart renders
// it when controlPlane.enabled (without TLS: the token goes in the clear,
// allowed explicitly).
func controlConfig() Config {
	cfg := testConfig()
	cfg.Control.Address = testControlAddress
	cfg.Control.AllowPlaintextToken = true
	return cfg
}

// The reviews in testdata have the shape the API server sends (userInfo,
// requestKind, options, managedFields, the service-account volume that
// admission adds before webhooks run), so unknown fields are exercised too.
func TestHandlerReviews(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		golden  string // default: file with .patched.json
		control bool   // inject with a control plane (controlConfig)
		allowed bool
		patched bool
		code    int32  // denial code
		message string // part of the denial message
	}{
		{name: "annotated pod gets the sidecar", file: "annotated.json", allowed: true, patched: true},
		{name: "with a control plane: control flags and token", file: "annotated.json", golden: "annotated.control.patched.json",
			control: true, allowed: true, patched: true},
		{name: "with a control plane: app annotation", file: "control-app-annotation.json", control: true, allowed: true, patched: true},
		{name: "app annotation not a label value", file: "bad-app-annotation.json", control: true, code: 422,
			message: `switchyard.io/app: "orders service" is not a label value`},
		{name: "app label fallback, init containers, no volumes", file: "app-label-init-containers.json", allowed: true, patched: true},
		{name: "not annotated", file: "not-annotated.json", allowed: true},
		{name: "opted out", file: "opted-out.json", allowed: true},
		{name: "already injected", file: "already-injected.json", allowed: true},
		{name: "update is not injected", file: "update.json", allowed: true},
		{name: "not a pod", file: "deployment.json", allowed: true},
		{name: "no app name", file: "no-app-name.json", code: 422, message: "has none of the labels app.kubernetes.io/name, app"},
		{name: "bad inject value", file: "bad-inject-value.json", code: 422, message: `switchyard.io/inject: "yes please"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := testConfig()
			if tt.control {
				cfg = controlConfig()
			}
			h, err := NewHandler(cfg, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
			in := readFile(t, tt.file)
			rec := post(h, in)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
			}
			var out AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("decode response: %v", err)
			}
			var req AdmissionReview
			if err := json.Unmarshal(in, &req); err != nil {
				t.Fatal(err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
				t.Fatalf("response envelope: %+v", out)
			}
			r := out.Response
			if r.UID != req.Request.UID {
				t.Errorf("uid %q, want %q", r.UID, req.Request.UID)
			}
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed %v, want %v (status %+v)", r.Allowed, tt.allowed, r.Result)
			}
			if !tt.allowed {
				if r.Result == nil || r.Result.Code != tt.code || !strings.Contains(r.Result.Message, tt.message) {
					t.Fatalf("status %+v, want code %d and a message containing %q", r.Result, tt.code, tt.message)
				}
				if got := testutil.ToFloat64(h.reviews.WithLabelValues(resultDenied)); got != 1 {
					t.Errorf("denied count %v, want 1", got)
				}
				return
			}
			if !tt.patched {
				if r.Patch != nil || r.PatchType != "" {
					t.Fatalf("unexpected patch %s", r.Patch)
				}
				return
			}
			if r.PatchType != "JSONPatch" {
				t.Errorf("patchType %q", r.PatchType)
			}
			var raw map[string]any
			if err := json.Unmarshal(in, &raw); err != nil {
				t.Fatal(err)
			}
			pod := raw["request"].(map[string]any)["object"]
			patched := applyPatch(t, pod, r.Patch)
			got, err := json.MarshalIndent(patched, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := tt.golden
			if golden == "" {
				golden = strings.TrimSuffix(tt.file, ".json") + ".patched.json"
			}
			if *update {
				if err := os.WriteFile(filepath.Join("testdata", golden), got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, golden); !bytes.Equal(got, want) {
				t.Errorf("patched pod differs from testdata/%s (go test -run %s -update to accept):\n%s", golden, t.Name(), got)
			}
			if got := testutil.ToFloat64(h.reviews.WithLabelValues(resultInjected)); got != 1 {
				t.Errorf("injected count %v, want 1", got)
			}
		})
	}
}

// TestInjectedSidecar checks what the golden files encode, so that a
// careless -update cannot accept a wrong sidecar.
func TestInjectedSidecar(t *testing.T) {
	tests := []struct {
		name       string
		file       string
		app        string
		configMap  string
		control    bool // the control flags and token are expected
		initIndex  int  // where the sidecar is among init containers
		initCount  int
		volumes    int
		labelCount int
	}{
		{name: "app.kubernetes.io/name", file: "annotated.patched.json", app: "orders", configMap: "switchyard-proxy", initIndex: 0, initCount: 1, volumes: 2, labelCount: 3},
		{name: "app label, config annotation", file: "app-label-init-containers.patched.json", app: "payments", configMap: "payments-proxy", initIndex: 0, initCount: 2, volumes: 1, labelCount: 3},
		{name: "control plane", file: "annotated.control.patched.json", app: "orders", configMap: "switchyard-proxy", control: true, initIndex: 0, initCount: 1, volumes: 3, labelCount: 3},
		{name: "control plane, app annotation", file: "control-app-annotation.patched.json", app: "orders-eu", configMap: "switchyard-proxy", control: true, initIndex: 0, initCount: 1, volumes: 2, labelCount: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pod struct {
				Metadata ObjectMeta `json:"metadata"`
				Spec     struct {
					InitContainers []Container `json:"initContainers"`
					Containers     []Container `json:"containers"`
					Volumes        []Volume    `json:"volumes"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(readFile(t, tt.file), &pod); err != nil {
				t.Fatal(err)
			}
			if len(pod.Spec.InitContainers) != tt.initCount {
				t.Fatalf("%d init containers, want %d", len(pod.Spec.InitContainers), tt.initCount)
			}
			c := pod.Spec.InitContainers[tt.initIndex]
			if c.Name != "switchyard-proxy" || c.RestartPolicy != "Always" || c.Image != "registry.example.com/switchyard:0.1.0" {
				t.Errorf("sidecar %q restartPolicy %q image %q", c.Name, c.RestartPolicy, c.Image)
			}
			wantArgs := []string{"proxy", "--config", "/etc/switchyard/proxy.yaml", "--listen", "127.0.0.1:9092",
				"--admin", "127.0.0.1:9190", "--health-listen", "0.0.0.0:9191"}
			if tt.control {
				wantArgs = append(wantArgs, "--control", testControlAddress, "--app", tt.app,
					"--instance", "$(SWITCHYARD_POD_NAMESPACE)/$(SWITCHYARD_POD_NAME)",
					"--control-token-file", "/var/run/secrets/switchyard/token", "--control-allow-plaintext-token")
			}
			if !slices.Equal(c.Args, wantArgs) {
				t.Errorf("args %q, want %q", c.Args, wantArgs)
			}
			// The kubelet expands $(VAR) in args only for variables the
			// container defines; anything else is passed on literally.
			for _, a := range c.Args {
				for _, m := range envRef.FindAllStringSubmatch(a, -1) {
					if !slices.ContainsFunc(c.Env, func(e EnvVar) bool { return e.Name == m[1] }) {
						t.Errorf("arg %q refers to $(%s), which the sidecar does not define", a, m[1])
					}
				}
			}
			if env := envValue(c.Env, "SWITCHYARD_APP"); env != tt.app {
				t.Errorf("SWITCHYARD_APP %q, want %q", env, tt.app)
			}
			if pod.Metadata.Labels[LabelApp] != tt.app || len(pod.Metadata.Labels) != tt.labelCount {
				t.Errorf("labels %v, want %s=%s among %d", pod.Metadata.Labels, LabelApp, tt.app, tt.labelCount)
			}
			if pod.Metadata.Annotations[AnnotationStatus] != "injected" {
				t.Errorf("annotations %v", pod.Metadata.Annotations)
			}
			if len(pod.Spec.Volumes) != tt.volumes {
				t.Fatalf("%d volumes, want %d", len(pod.Spec.Volumes), tt.volumes)
			}
			vols := map[string]Volume{}
			for _, v := range pod.Spec.Volumes {
				vols[v.Name] = v
			}
			if v := vols[proxyConfigVolume]; v.ConfigMap == nil || v.ConfigMap.Name != tt.configMap {
				t.Errorf("volume %+v, want ConfigMap %s", v, tt.configMap)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				if !m.ReadOnly {
					t.Errorf("mount %+v: want read-only", m)
				}
				mounts[m.Name] = m.MountPath
			}
			if mounts[proxyConfigVolume] != "/etc/switchyard" {
				t.Errorf("mounts %v: want the proxy config on /etc/switchyard", mounts)
			}
			tok, ok := vols[controlTokenVolume]
			if ok != tt.control || (mounts[controlTokenVolume] != "") != tt.control {
				t.Fatalf("token volume %v, mount %q: want them only with a control plane", ok, mounts[controlTokenVolume])
			}
			if tt.control {
				if s := tok.Secret; s == nil || s.SecretName != "switchyard-sidecar-token" || len(s.Items) != 1 || s.Items[0] != (KeyToPath{Key: "token", Path: "token"}) ||
					s.DefaultMode == nil || *s.DefaultMode != 0o444 {
					t.Errorf("token volume %+v", tok)
				}
				if mounts[controlTokenVolume] != "/var/run/secrets/switchyard" {
					t.Errorf("token mounted on %q", mounts[controlTokenVolume])
				}
				for _, ac := range pod.Spec.Containers {
					if len(ac.VolumeMounts) > 0 && slices.ContainsFunc(ac.VolumeMounts, func(m VolumeMount) bool { return m.Name == controlTokenVolume }) {
						t.Errorf("container %s mounts the token: only the sidecar may", ac.Name)
					}
				}
			}
			// The admin API (switch, gates) is reachable from the pod only;
			// probes, the one declared port and the Prometheus annotations
			// are the read-only health listener's.
			admin := c.Args[slices.Index(c.Args, "--admin")+1]
			if host, _, err := net.SplitHostPort(admin); err != nil || !net.ParseIP(host).IsLoopback() {
				t.Errorf("--admin %q: want a loopback address", admin)
			}
			_, healthPort, _ := net.SplitHostPort(c.Args[slices.Index(c.Args, "--health-listen")+1])
			if len(c.Ports) != 1 || c.Ports[0].Name != HealthPortName || strconv.Itoa(int(c.Ports[0].ContainerPort)) != healthPort {
				t.Errorf("ports %+v: want only %s, the --health-listen port %s", c.Ports, HealthPortName, healthPort)
			}
			for _, p := range []*Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p == nil || p.HTTPGet.Port != HealthPortName {
					t.Errorf("probe %+v: want one on the health port", p)
				}
			}
			if a := pod.Metadata.Annotations; a[AnnotationPrometheusScrape] != "true" || a[AnnotationPrometheusPort] != healthPort || a[AnnotationPrometheusPath] != "/metrics" {
				t.Errorf("annotations %v: want Prometheus pointed at /metrics on the health port %s", a, healthPort)
			}
			if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("readiness %s liveness %s", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
			}
			if len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name == "switchyard-proxy" {
				t.Errorf("app containers changed: %+v", pod.Spec.Containers)
			}
		})
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func TestInjectPlainContainer(t *testing.T) {
	cfg := testConfig()
	cfg.NativeSidecar = false
	cfg.ExtraArgs = []string{"--log-level", "debug"}
	pod := &Pod{
		Metadata: ObjectMeta{GenerateName: "orders-", Labels: map[string]string{"app": "orders"}, Annotations: map[string]string{AnnotationInject: "true", AnnotationApp: "orders-v2"}},
		Spec:     PodSpec{Containers: []NamedObject{{Name: "app"}}},
	}
	patch, err := Inject(pod, "shop", cfg)
	if err != nil {
		t.Fatal(err)
	}
	// container, volumes, status annotation, three Prometheus annotations, label
	if len(patch) != 7 || patch[0].Path != "/spec/containers/-" {
		t.Fatalf("patch %+v", patch)
	}
	c := patch[0].Value.(Container)
	if c.RestartPolicy != "" || !slices.Contains(c.Args, "debug") || envValue(c.Env, "SWITCHYARD_APP") != "orders-v2" {
		t.Errorf("container %+v", c)
	}
	if patch[6].Path != "/metadata/labels/switchyard.io~1app" || patch[6].Value != "orders-v2" {
		t.Errorf("label op %+v", patch[6])
	}
}

// TestInjectPrometheusAnnotations: a pod without Prometheus annotations gets
// them, pointed at the sidecar's health port; a pod with any of its own
// keeps them as they are.
func TestInjectPrometheusAnnotations(t *testing.T) {
	for _, tt := range []struct {
		name string
		own  map[string]string
		want bool
	}{
		{name: "none", want: true},
		{name: "the application's own scrape port", own: map[string]string{AnnotationPrometheusScrape: "true", AnnotationPrometheusPort: "8080"}},
		{name: "opted out", own: map[string]string{AnnotationPrometheusScrape: "false"}},
		{name: "only a path", own: map[string]string{AnnotationPrometheusPath: "/app-metrics"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{AnnotationInject: "true"}
			maps.Copy(ann, tt.own)
			pod := &Pod{Metadata: ObjectMeta{GenerateName: "orders-", Labels: map[string]string{"app": "orders"}, Annotations: ann},
				Spec: PodSpec{Containers: []NamedObject{{Name: "app"}}}}
			patch, err := Inject(pod, "shop", testConfig())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for _, op := range patch {
				if k, ok := strings.CutPrefix(op.Path, "/metadata/annotations/prometheus.io~1"); ok {
					got[k] = op.Value
				}
			}
			if !tt.want {
				if len(got) != 0 {
					t.Errorf("annotations added %v over the pod's own %v", got, tt.own)
				}
				return
			}
			if len(got) != 3 || got["scrape"] != "true" || got["port"] != "9191" || got["path"] != "/metrics" {
				t.Errorf("annotations added %v, want scrape true, port 9191, path /metrics", got)
			}
		})
	}
}

func TestMalformedReviews(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		code        int
		message     string
	}{
		{name: "not JSON", body: readFile(t, "malformed-not-json.json"), code: 400, message: "admission review: decode: unexpected end of JSON input"},
		{name: "v1beta1", body: readFile(t, "malformed-v1beta1.json"), code: 400, message: `apiVersion "admission.k8s.io/v1beta1" kind "AdmissionReview": want admission.k8s.io/v1 AdmissionReview`},
		{name: "no request", body: readFile(t, "malformed-no-request.json"), code: 400, message: "admission review: no request"},
		{name: "no uid", body: readFile(t, "malformed-no-uid.json"), code: 400, message: "admission review: request.uid: empty"},
		{name: "empty body", body: nil, code: 400, message: "admission review: decode"},
		{name: "GET", method: http.MethodGet, code: 405, message: "want POST"},
		{name: "YAML", contentType: "application/yaml", body: []byte("kind: AdmissionReview"), code: 415, message: "want application/json"},
		{name: "too large", body: bytes.Repeat([]byte(" "), maxReviewBytes+1), code: 400, message: "read body: http: request body too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHandler(testConfig(), nil, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/mutate", bytes.NewReader(tt.body))
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.message) {
				t.Fatalf("HTTP %d %q, want %d containing %q", rec.Code, rec.Body, tt.code, tt.message)
			}
			if got := testutil.ToFloat64(h.reviews.WithLabelValues(resultInvalid)); got != 1 {
				t.Errorf("invalid count %v, want 1", got)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		err    string
	}{
		{name: "defaults with image", modify: func(*Config) {}},
		{name: "no image", modify: func(c *Config) { c.Image = "" }, err: "image: required"},
		{name: "listen not loopback", modify: func(c *Config) { c.Listen = "0.0.0.0:9092" }, err: "want a 127.0.0.0/8 address"},
		{name: "listen IPv6 loopback", modify: func(c *Config) { c.Listen = "[::1]:9092" }},
		{name: "admin port", modify: func(c *Config) { c.AdminPort = 0 }, err: "adminPort: 0 out of range"},
		{name: "health port", modify: func(c *Config) { c.HealthPort = 70000 }, err: "healthPort: 70000 out of range"},
		{name: "health port is the admin port", modify: func(c *Config) { c.HealthPort = c.AdminPort }, err: "healthPort: 9190 is also adminPort"},
		{name: "owned health flag", modify: func(c *Config) { c.ExtraArgs = []string{"-health-listen", ":1"} }, err: "extraArgs: --health-listen is set by the injector"},
		{name: "owned flag", modify: func(c *Config) { c.ExtraArgs = []string{"--admin=127.0.0.1:1"} }, err: "extraArgs: --admin is set by the injector"},
		{name: "root", modify: func(c *Config) { c.RunAsUser = 0 }, err: "runAsUser: 0"},
		{name: "pull policy", modify: func(c *Config) { c.ImagePullPolicy = "Sometimes" }, err: "imagePullPolicy"},
		{name: "control", modify: func(c *Config) { c.Control.Address = testControlAddress; c.Control.TLSSecret = "control-tls" }},
		{name: "control token in the clear", modify: func(c *Config) { c.Control.Address = testControlAddress }, err: "control.tokenSecret without tlsSecret"},
		{name: "control token in the clear, allowed", modify: func(c *Config) { c.Control.Address = testControlAddress; c.Control.AllowPlaintextToken = true }},
		{name: "control address", modify: func(c *Config) { c.Control.Address = "switchyard-control" }, err: "control.address"},
		{name: "control address port", modify: func(c *Config) { c.Control.Address = "switchyard-control:http" }, err: "control.address"},
		{name: "control without token", modify: func(c *Config) { c.Control = Control{Address: testControlAddress} }, err: "control.tokenSecret: required"},
		{name: "control token secret name", modify: func(c *Config) { c.Control.Address = testControlAddress; c.Control.TokenSecret = "Token" }, err: "control.tokenSecret"},
		{name: "control flag owned", modify: func(c *Config) { c.Control.Address = testControlAddress; c.ExtraArgs = []string{"-app", "x"} }, err: "extraArgs: --app is set by the injector"},
		{name: "control flags free without a control plane", modify: func(c *Config) { c.ExtraArgs = []string{"--control=x:1", "--app", "x"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(h http.Handler, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/mutate?timeout=10s", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func envValue(env []EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// applyPatch applies the "add" operations of an RFC 6902 patch (all the
// injector emits) to a decoded JSON document, failing on anything the
// API server would refuse: a missing parent, an existing object member, an
// array index out of range.
func applyPatch(t *testing.T, doc any, patch []byte) any {
	t.Helper()
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	for _, op := range ops {
		if op.Op != "add" {
			t.Fatalf("op %q: only add is expected", op.Op)
		}
		var value any
		if err := json.Unmarshal(op.Value, &value); err != nil {
			t.Fatalf("%s: value: %v", op.Path, err)
		}
		var err error
		if doc, err = add(doc, strings.Split(op.Path, "/")[1:], value); err != nil {
			t.Fatalf("add %s: %v", op.Path, err)
		}
	}
	return doc
}

func add(doc any, path []string, value any) (any, error) {
	key := strings.NewReplacer("~1", "/", "~0", "~").Replace(path[0])
	last := len(path) == 1
	switch d := doc.(type) {
	case map[string]any:
		if last {
			if _, ok := d[key]; ok {
				return nil, fmt.Errorf("member %q exists: add would replace it", key)
			}
			d[key] = value
			return d, nil
		}
		child, ok := d[key]
		if !ok {
			return nil, fmt.Errorf("no member %q", key)
		}
		v, err := add(child, path[1:], value)
		d[key] = v
		return d, err
	case []any:
		i := len(d)
		if key != "-" {
			n, err := strconv.Atoi(key)
			if err != nil || n < 0 || n > len(d) {
				return nil, fmt.Errorf("index %q out of range", key)
			}
			i = n
		}
		if last {
			return slices.Insert(d, i, value), nil
		}
		if i == len(d) {
			return nil, fmt.Errorf("index %q out of range", key)
		}
		v, err := add(d[i], path[1:], value)
		d[i] = v
		return d, err
	default:
		return nil, fmt.Errorf("%q: not an object or array", key)
	}
}
