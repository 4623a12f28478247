package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
)

// proxyOptions is everything `switchyard proxy` is configured with.
type proxyOptions struct {
	Proxy     proxy.Config
	Admin     admin.Config
	LogLevel  string
	LogFormat string
}

// proxyFile is the YAML configuration file's shape (--config).
type proxyFile struct {
	Listen            string                `yaml:"listen"`
	Admin             string                `yaml:"admin"`
	Active            string                `yaml:"active"`
	Clusters          []proxy.ClusterConfig `yaml:"clusters"`
	ForbiddenAPIKeys  []int16               `yaml:"forbiddenApiKeys"`
	AdvertiseHost     string                `yaml:"advertiseHost"`
	BrokerPortBase    *int                  `yaml:"brokerPortBase"`
	BrokerAddressBase string                `yaml:"brokerAddressBase"`
	ClusterID         string                `yaml:"clusterId"`
	MaxFrameBytes     int32                 `yaml:"maxFrameBytes"`
	DialTimeout       time.Duration         `yaml:"dialTimeout"`
	DrainTimeout      time.Duration         `yaml:"drainTimeout"`
	HoldBudget        time.Duration         `yaml:"holdBudget"`
	LogLevel          string                `yaml:"logLevel"`
	LogFormat         string                `yaml:"logFormat"`
}

const proxyUsage = `Usage: switchyard proxy [flags]

Runs the sidecar proxy. Clients bootstrap at --listen; each virtual broker
gets its own local listener. The admin API (gRPC and REST) is on --admin:

  GET /v1/status   POST /v1/switch {"cluster":"target"}
  PUT /v1/gates {"apiKeys":[0],"mode":"REJECT"|"HOLD"}   DELETE /v1/gates
  GET /metrics   GET /healthz   GET /readyz   GET /v1/openapi.json

Configuration comes from, lowest precedence first: defaults, the YAML file
named by --config, SWITCHYARD_* environment variables (the flag name in
upper case with dashes as underscores, e.g. SWITCHYARD_DRAIN_TIMEOUT=5s;
SWITCHYARD_CLUSTER takes several clusters separated by ';'), then flags.

Example:
  switchyard proxy --cluster source=kafka-a:9092 --cluster target=b-1.msk:9092 \
    --active source --listen 127.0.0.1:9092 --admin 127.0.0.1:9190

Flags:
`

// parseProxyOptions builds the options from args, the environment and the
// config file. Errors name the flag, variable or field at fault.
func parseProxyOptions(args []string, getenv func(string) string, stderr io.Writer) (proxyOptions, error) {
	opts := proxyOptions{Proxy: proxy.DefaultConfig(), Admin: admin.DefaultConfig(), LogLevel: "info", LogFormat: "json"}

	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, proxyUsage)
		fs.PrintDefaults()
	}
	var clusters multiFlag
	configPath := fs.String("config", "", "YAML configuration `file`")
	// Every other flag is read back by name below, after the config file
	// and the environment, so precedence is applied in one place.
	for _, f := range []struct{ name, def, help string }{
		{"active", "", "`name` of the cluster routed to at start (required with several clusters)"},
		{"listen", opts.Proxy.Listen, "bootstrap listener `host:port` clients connect to"},
		{"admin", opts.Admin.Listen, "admin API listener `host:port` (gRPC, REST, metrics, health)"},
		{"forbidden-api-keys", "", "comma-separated API `keys` rejected with a retriable error from start (kafka-proxy compatible; 0 = Produce)"},
		{"advertise-host", "", "`host` put in broker addresses given to clients (default: the --listen host)"},
		{"broker-port-base", "0", "virtual broker N listens on `port` base+N (0: the port after --listen's)"},
		{"broker-address-base", "", "give virtual broker N its own `address` base+N in 127.0.0.0/8, on the --listen port"},
		{"cluster-id", "", "virtual cluster `id` presented to clients (default: derived from the cluster names)"},
		{"max-frame-bytes", strconv.Itoa(int(opts.Proxy.MaxFrameBytes)), "largest request or response frame, in `bytes`"},
		{"dial-timeout", opts.Proxy.DialTimeout.String(), "upstream dial `timeout`"},
		{"drain-timeout", opts.Proxy.DrainTimeout.String(), "how long a switch waits for in-flight requests"},
		{"hold-budget", opts.Proxy.HoldBudget.String(), "how long a HOLD gate parks a request before a retriable error"},
		{"log-level", opts.LogLevel, "`level`: debug, info, warn, error"},
		{"log-format", opts.LogFormat, "`format`: json or console"},
	} {
		fs.String(f.name, f.def, f.help)
	}
	fs.Var(&clusters, "cluster", "upstream cluster as `name=host:port[,host:port...]`; repeat for each cluster")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return opts, err
		}
		return opts, usageError{err}
	}
	if fs.NArg() > 0 {
		return opts, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// 1. The config file.
	path := *configPath
	if !set["config"] {
		path = getenv("SWITCHYARD_CONFIG")
	}
	if path != "" {
		if err := loadProxyFile(path, &opts); err != nil {
			return opts, usageError{err}
		}
	}
	// 2. Environment, then 3. flags, for every flag but --config.
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || f.Name == "config" {
			return
		}
		env := "SWITCHYARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		var value string
		switch {
		case set[f.Name]:
			value = f.Value.String()
			if f.Name == "cluster" {
				value = strings.Join(clusters, ";")
			}
		case getenv(env) != "":
			value = getenv(env)
		default:
			return
		}
		if e := applyProxyOption(&opts, f.Name, value); e != nil {
			src := "--" + f.Name
			if !set[f.Name] {
				src = env
			}
			err = usageError{fmt.Errorf("%s: %w", src, e)}
		}
	})
	if err != nil {
		return opts, err
	}
	if err := opts.Proxy.Validate(); err != nil {
		return opts, usageError{err}
	}
	if err := opts.Admin.Validate(); err != nil {
		return opts, usageError{fmt.Errorf("admin %w", err)}
	}
	switch opts.LogFormat {
	case "json", "console":
	default:
		return opts, usageError{fmt.Errorf("log-format: %q: want json or console", opts.LogFormat)}
	}
	return opts, nil
}

// applyProxyOption sets one option from its flag name and string value.
func applyProxyOption(o *proxyOptions, name, value string) error {
	var err error
	switch name {
	case "cluster":
		o.Proxy.Clusters = nil
		for _, spec := range strings.Split(value, ";") {
			if strings.TrimSpace(spec) == "" {
				continue
			}
			c, e := parseClusterSpec(spec)
			if e != nil {
				return e
			}
			o.Proxy.Clusters = append(o.Proxy.Clusters, c)
		}
	case "active":
		o.Proxy.Active = value
	case "listen":
		o.Proxy.Listen = value
	case "admin":
		o.Admin.Listen = value
	case "forbidden-api-keys":
		keys, e := parseAPIKeys(value)
		if e != nil {
			return e
		}
		o.Proxy.Gate = proxy.Gate{APIKeys: keys, Mode: proxy.GateReject}
		if len(keys) == 0 {
			o.Proxy.Gate = proxy.Gate{}
		}
	case "advertise-host":
		o.Proxy.AdvertiseHost = value
	case "broker-port-base":
		o.Proxy.BrokerPortBase, err = strconv.Atoi(value)
	case "broker-address-base":
		o.Proxy.BrokerAddressBase = value
	case "cluster-id":
		o.Proxy.ClusterID = value
	case "max-frame-bytes":
		var n int64
		n, err = strconv.ParseInt(value, 10, 32)
		o.Proxy.MaxFrameBytes = int32(n)
	case "dial-timeout":
		o.Proxy.DialTimeout, err = time.ParseDuration(value)
	case "drain-timeout":
		o.Proxy.DrainTimeout, err = time.ParseDuration(value)
	case "hold-budget":
		o.Proxy.HoldBudget, err = time.ParseDuration(value)
	case "log-level":
		o.LogLevel = value
	case "log-format":
		o.LogFormat = value
	default:
		return fmt.Errorf("unknown option")
	}
	if err != nil {
		return fmt.Errorf("%q: %w", value, err)
	}
	return nil
}

// parseClusterSpec parses name=host:port[,host:port...].
func parseClusterSpec(spec string) (proxy.ClusterConfig, error) {
	name, addrs, ok := strings.Cut(strings.TrimSpace(spec), "=")
	if !ok || name == "" || addrs == "" {
		return proxy.ClusterConfig{}, fmt.Errorf("%q: want name=host:port[,host:port...]", spec)
	}
	c := proxy.ClusterConfig{Name: name}
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.Bootstrap = append(c.Bootstrap, a)
		}
	}
	return c, nil
}

// parseAPIKeys parses a comma-separated list of API keys.
func parseAPIKeys(s string) ([]int16, error) {
	var keys []int16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 16)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("API key %q: want a non-negative integer", f)
		}
		keys = append(keys, int16(n))
	}
	return keys, nil
}

func loadProxyFile(path string, o *proxyOptions) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var f proxyFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&o.Proxy.Listen, f.Listen)
	set(&o.Admin.Listen, f.Admin)
	set(&o.Proxy.Active, f.Active)
	set(&o.Proxy.AdvertiseHost, f.AdvertiseHost)
	set(&o.Proxy.BrokerAddressBase, f.BrokerAddressBase)
	set(&o.Proxy.ClusterID, f.ClusterID)
	set(&o.LogLevel, f.LogLevel)
	set(&o.LogFormat, f.LogFormat)
	if len(f.Clusters) > 0 {
		o.Proxy.Clusters = f.Clusters
	}
	if len(f.ForbiddenAPIKeys) > 0 {
		o.Proxy.Gate = proxy.Gate{APIKeys: f.ForbiddenAPIKeys, Mode: proxy.GateReject}
	}
	if f.BrokerPortBase != nil {
		o.Proxy.BrokerPortBase = *f.BrokerPortBase
	}
	if f.MaxFrameBytes != 0 {
		o.Proxy.MaxFrameBytes = f.MaxFrameBytes
	}
	if f.DialTimeout != 0 {
		o.Proxy.DialTimeout = f.DialTimeout
	}
	if f.DrainTimeout != 0 {
		o.Proxy.DrainTimeout = f.DrainTimeout
	}
	if f.HoldBudget != 0 {
		o.Proxy.HoldBudget = f.HoldBudget
	}
	return nil
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ";") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
