package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/deploy/injector"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// recorder is a Registerer that remembers the name and kind of every
// metric registered on it. Descriptions, not gathered samples: a vector
// with no child yet has no sample but is registered all the same.
type recorder struct {
	reg   *prometheus.Registry
	kinds map[string]string // name → "histogram", "summary" or "other"
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	// prometheus.Histogram and prometheus.Summary have the same method
	// set, so the concrete type tells them apart.
	kind := "other"
	switch t := strings.ToLower(fmt.Sprintf("%T", c)); {
	case strings.Contains(t, "histogram"):
		kind = "histogram"
	case strings.Contains(t, "summary"):
		kind = "summary"
	}
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			return fmt.Errorf("cannot read the name of %s", d)
		}
		r.kinds[m[1]] = kind
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// registeredMetrics builds every component that exports metrics with its
// real constructor — the proxy, its control-plane client, the injector,
// the mirror and the control plane — and returns the metrics they
// register. None of them contacts anything here.
func registeredMetrics(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{reg: prometheus.NewRegistry(), kinds: map[string]string{}}
	cfg := proxy.DefaultConfig()
	cfg.Clusters = []proxy.ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	p, err := proxy.New(cfg, zap.NewNop(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ccfg := controlclient.DefaultConfig()
	ccfg.Address, ccfg.App, ccfg.Instance = "127.0.0.1:1", "orders", "shop/orders-0"
	if _, err := controlclient.New(ccfg, p, r, nil); err != nil {
		t.Fatal(err)
	}
	icfg := injector.DefaultConfig()
	icfg.Image = "switchyard:test"
	if _, err := injector.NewHandler(icfg, nil, r); err != nil {
		t.Fatal(err)
	}
	mcfg := mirror.DefaultConfig()
	mcfg.Name, mcfg.SourceBootstrap, mcfg.TargetBootstrap = "orders", []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}
	if _, err := mirror.New(mcfg, nil, r); err != nil {
		t.Fatal(err)
	}
	store, err := control.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sidecars, err := control.NewRegistry(store, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := control.NewController(sidecars, store, nil, nil, zap.NewNop()).Instrument(r); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"switchyard_proxy_", "switchyard_sidecar_", "switchyard_injector_", "switchyard_mirror_", "switchyard_control_"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(r.kinds)), func(n string) bool { return strings.HasPrefix(n, prefix) }) {
			t.Fatalf("no %s* metric registered: %v", prefix, r.kinds)
		}
	}
	return r
}

// resolve maps a series name to the registered metric it belongs to
// (histogram series _bucket, _sum, _count; summary _sum, _count).
func (r *recorder) resolve(name string) (string, bool) {
	if _, ok := r.kinds[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch r.kinds[base] {
		case "histogram":
			return base, true
		case "summary":
			if suffix != "_bucket" {
				return base, true
			}
		}
	}
	return "", false
}

var promql = parser.NewParser(parser.Options{})

// metricNames parses expr and returns the metric names it selects.
func metricNames(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == "__name__" {
					name = m.Value
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names, nil
}

// alertRules is the rule file format (Prometheus rule_files).
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules parses the rule file strictly, every expression as
// PromQL, every annotation as a template, and checks each metric exists.
func TestAlertRules(t *testing.T) {
	reg := registeredMetrics(t)
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	// The functions Prometheus adds to annotation templates (stubs: only
	// parsing is checked here).
	funcs := template.FuncMap{}
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"query", "first", "label", "value", "args", "reReplaceAll", "safeHtml", "match", "title", "toUpper", "toLower",
		"graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain", "externalURL", "pathPrefix", "parseDuration", "toTime"} {
		funcs[f] = func(...any) any { return nil }
	}
	groups, alerts := map[string]bool{}, map[string]bool{}
	n := 0
	for _, g := range rules.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q empty or repeated", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			n++
			t.Run(r.Alert, func(t *testing.T) {
				if r.Alert == "" || r.Record != "" {
					t.Fatalf("only alerting rules are expected here (alert %q record %q)", r.Alert, r.Record)
				}
				if alerts[r.Alert] {
					t.Errorf("alert %s defined twice", r.Alert)
				}
				alerts[r.Alert] = true
				names, err := metricNames(r.Expr)
				if err != nil {
					t.Fatalf("expr: %v\n%s", err, r.Expr)
				}
				for _, name := range names {
					if _, ok := reg.resolve(name); !ok {
						t.Errorf("expr names %s, which no component registers", name)
					}
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("for: %v", err)
					}
				}
				if s := r.Labels["severity"]; s != "warning" && s != "critical" {
					t.Errorf("severity %q: want warning or critical", s)
				}
				for _, a := range []string{"summary", "description"} {
					text := r.Annotations[a]
					if text == "" {
						t.Errorf("no %s annotation", a)
						continue
					}
					if _, err := template.New(a).Funcs(funcs).Parse("{{$labels := .Labels}}{{$value := .Value}}" + text); err != nil {
						t.Errorf("annotation %s: %v", a, err)
					}
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}
}

// dashboard is the part of a Grafana dashboard checked here.
type dashboard struct {
	UID         string  `json:"uid"`
	Title       string  `json:"title"`
	Panels      []panel `json:"panels"`
	Annotations struct {
		List []struct {
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

// grafanaVars stands in for Grafana's variables so that expressions parse
// as the PromQL Prometheus will receive.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$namespace", "ns", "$app", "app", "$pod", "pod", "$mirror", "mirror", "$topic", "topic",
)

// dashboards are the Grafana dashboards and the metrics each must show:
// every metric registered under one of its prefixes needs a panel there.
var dashboards = map[string][]string{
	"grafana/switchyard-proxy.json":    {"switchyard_proxy_", "switchyard_sidecar_"},
	"grafana/switchyard-mirror.json":   {"switchyard_mirror_"},
	"grafana/switchyard-cutovers.json": {"switchyard_control_"},
}

// TestDashboard parses every query of every Grafana dashboard as PromQL,
// checks each metric exists, and that each dashboard shows every metric
// of its component.
func TestDashboard(t *testing.T) {
	reg := registeredMetrics(t)
	files, err := filepath.Glob("grafana/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(dashboards) {
		t.Errorf("dashboards %v, want those of the table: %v", files, slices.Sorted(maps.Keys(dashboards)))
	}
	uids := map[string]string{}
	for _, file := range slices.Sorted(maps.Keys(dashboards)) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			uid := checkDashboard(t, reg, file, dashboards[file])
			if other, ok := uids[uid]; ok {
				t.Errorf("uid %q is also %s's", uid, other)
			}
			uids[uid] = file
		})
	}
}

// checkDashboard checks one dashboard and returns its uid.
func checkDashboard(t *testing.T, reg *recorder, file string, prefixes []string) string {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: both required", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if q, ok := v.Query.(map[string]any); ok {
			// label_values(metric{...}, label): the metric must exist.
			if m := labelValues.FindStringSubmatch(fmt.Sprint(q["query"])); m != nil {
				if _, ok := reg.resolve(m[1]); !ok {
					t.Errorf("variable %s: label_values of %s, which no component registers", v.Name, m[1])
				}
			} else {
				t.Errorf("variable %s: query %v: want label_values(metric, label)", v.Name, q["query"])
			}
		}
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		t.Helper()
		if strings.Contains(expr, "label_values(") {
			return // a variable query, not PromQL
		}
		for _, m := range dashVar.FindAllStringSubmatch(expr, -1) {
			if !strings.HasPrefix(m[1], "__") && !vars[m[1]] {
				t.Errorf("%s: $%s is not a variable of this dashboard", where, m[1])
			}
		}
		e := grafanaVars.Replace(expr)
		if strings.Contains(e, "$") {
			t.Errorf("%s: unknown Grafana variable in %s", where, expr)
			return
		}
		names, err := metricNames(e)
		if err != nil {
			t.Errorf("%s: %v\n%s", where, err, expr)
			return
		}
		for _, name := range names {
			base, ok := reg.resolve(name)
			if !ok {
				t.Errorf("%s: names %s, which no component registers", where, name)
			}
			used[base] = true
		}
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d repeated", p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) > 0 && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: datasource must be the ${datasource} variable", p.Title)
			}
			for _, tg := range p.Targets {
				check(fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		check("annotation", a.Expr)
	}
	var missing []string
	for name := range reg.kinds {
		for _, prefix := range prefixes {
			if strings.HasPrefix(name, prefix) && !used[name] {
				missing = append(missing, name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics with no panel on %s: %v", file, missing)
	}
	return d.UID
}

var (
	labelValues = regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)[{,]`)
	dashVar     = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
)

// TestMetricsNamed guards the check itself: a misspelt metric is caught
// and histogram series resolve to their histogram only.
func TestMetricsNamed(t *testing.T) {
	reg := registeredMetrics(t)
	tests := []struct {
		series string
		ok     bool
	}{
		{"switchyard_proxy_requests_total", true},
		{"switchyard_proxy_upstream_latency_seconds_bucket", true},
		{"switchyard_proxy_switch_duration_seconds_count", true},
		{"switchyard_proxy_request_total", false},
		{"switchyard_proxy_requests_total_bucket", false},
		{"switchyard_mirror_lag_records", true},
		{"switchyard_mirror_replication_latency_seconds_bucket", true},
		{"switchyard_mirror_lag_record", false},
		{"switchyard_control_sidecars", true},
		{"switchyard_control_block_window_seconds_count", true},
		{"switchyard_control_cutovers", false},
		{"switchyard_sidecar_control_connected", true},
	}
	for _, tt := range tests {
		t.Run(tt.series, func(t *testing.T) {
			if _, ok := reg.resolve(tt.series); ok != tt.ok {
				t.Errorf("resolve(%s) = %v, want %v", tt.series, ok, tt.ok)
			}
		})
	}
	names, err := metricNames(`sum(rate({__name__="switchyard_proxy_connections_total"}[5m])) / on() switchyard_proxy_connections`)
	if err != nil || !slices.Equal(names, []string{"switchyard_proxy_connections_total", "switchyard_proxy_connections"}) {
		t.Errorf("metricNames = %v, %v", names, err)
	}
}

// TestHelmInjectorConfig renders the chart's injector ConfigMap with the
// helm named by $HELM (set by deploy.mk) and checks `switchyard inject`
// would accept it: every key known, the config valid.
func TestHelmInjectorConfig(t *testing.T) {
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Skip("HELM is not set: run make test-deploy (deploy/deploy.mk installs helm)")
	}
	withControl := []string{"-f", "helm/switchyard/ci/control-plane-values.yaml"}
	for _, set := range [][]string{nil, {"--set", "injector.sidecar.nativeSidecar=false", "--set", "injector.sidecar.extraArgs={--log-level,debug}"}, withControl} {
		args := append([]string{"template", "sy", "helm/switchyard", "--kube-version", "1.37.0", "--show-only", "templates/injector-config.yaml"}, set...)
		out, err := exec.Command(helm, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		if err := yaml.Unmarshal(out, &cm); err != nil {
			t.Fatal(err)
		}
		cfg := injector.DefaultConfig()
		dec := yaml.NewDecoder(strings.NewReader(cm.Data["injector.yaml"]))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("injector.yaml (%v): %v\n%s", set, err, cm.Data["injector.yaml"])
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("injector.yaml (%v): %v", set, err)
		}
		if cfg.Image != "switchyard:0.1.0" {
			t.Errorf("image %q", cfg.Image)
		}
		control := slices.Equal(set, withControl)
		if set != nil && !control && (cfg.NativeSidecar || !slices.Equal(cfg.ExtraArgs, []string{"--log-level", "debug"})) {
			t.Errorf("--set not applied: %+v", cfg)
		}
		// The sidecars follow the release's control plane only when it is
		// enabled.
		want := injector.Control{TokenSecret: "switchyard-sidecar-token", TokenSecretKey: "token"}
		if control {
			// Without TLS the token goes in the clear, allowed explicitly
			// (injector.sidecar.control.allowPlaintextToken, default true).
			want.Address, want.AllowPlaintextToken = "sy-switchyard-control.default.svc:9180", true
		}
		if cfg.Control != want {
			t.Errorf("control %+v, want %+v", cfg.Control, want)
		}
	}
}
