package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// proxyOptions is everything `switchyard proxy` is configured with.
type proxyOptions struct {
	Proxy proxy.Config
	Admin admin.Config
	// Control configures the control-plane client; an empty Address
	// means no control plane (the other fields are then ignored).
	Control controlclient.Config
	// ControlTokenFile, when set, holds the control plane's bearer token;
	// parseProxyOptions reads it into Control.Token.
	ControlTokenFile string
	// AdminTokenFile, when set, holds the bearer token the admin API
	// requires; parseProxyOptions reads it into Admin.Token.
	AdminTokenFile string
	LogLevel       string
	LogFormat      string
}

// proxyFile is the YAML configuration file's shape (--config).
type proxyFile struct {
	Listen            string                `yaml:"listen"`
	Admin             string                `yaml:"admin"`
	HealthListen      string                `yaml:"healthListen"`
	AdminTokenFile    string                `yaml:"adminTokenFile"`
	AdminTLS          tlsfiles.Files        `yaml:"adminTls"`
	AdminAllowedHosts []string              `yaml:"adminAllowedHosts"`
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
	MaxHold           time.Duration         `yaml:"maxHold"`
	MaxHeldBytes      int64                 `yaml:"maxHeldBytes"`
	MaxConnections    int                   `yaml:"maxConnections"`
	MaxInflight       int                   `yaml:"maxInflightPerConnection"`
	IdleTimeout       time.Duration         `yaml:"idleTimeout"`
	ClientIOTimeout   time.Duration         `yaml:"clientIOTimeout"`
	MaxVirtualBrokers int                   `yaml:"maxVirtualBrokers"`
	Routing           string                `yaml:"routing"`
	StopTimeout       time.Duration         `yaml:"stopTimeout"`
	ProducerIDExpiry  time.Duration         `yaml:"producerIdExpiry"`
	MaxProducerIDs    int                   `yaml:"maxProducerIds"`
	MaxTxnTimeout     time.Duration         `yaml:"maxTransactionTimeout"`
	ClientAuth        proxy.ClientAuth      `yaml:"clientAuth"`
	LogLevel          string                `yaml:"logLevel"`
	LogFormat         string                `yaml:"logFormat"`

	Control               string            `yaml:"control"`
	App                   string            `yaml:"app"`
	Instance              string            `yaml:"instance"`
	Labels                map[string]string `yaml:"labels"`
	ControlTokenFile      string            `yaml:"controlTokenFile"`
	ControlWait           *time.Duration    `yaml:"controlWait"`
	ControlStatusInterval time.Duration     `yaml:"controlStatusInterval"`
	// ControlAllowPlaintextToken: see controlclient.Config.AllowPlaintextToken.
	ControlAllowPlaintextToken bool `yaml:"controlAllowPlaintextToken"`
}

const proxyUsage = `Usage: switchyard proxy [flags]

Runs the sidecar proxy. Clients bootstrap at --listen; each virtual broker
gets its own local listener. The admin API (gRPC and REST) is on --admin:

  GET /v1/status   POST /v1/switch {"cluster":"target"}
  PUT /v1/gates {"apiKeys":[0],"mode":"REJECT"|"HOLD"}   DELETE /v1/gates
  GET /metrics   GET /healthz   GET /readyz   GET /v1/openapi.json

It can gate and switch the proxy, so it listens on loopback unless it has
credentials: a non-loopback --admin needs --admin-token-file (or
SWITCHYARD_ADMIN_TOKEN) or --admin-tls-ca (mTLS). Browsers are refused:
calls that change anything need Content-Type: application/json (curl
--json), and a foreign Origin or a Host that is not an IP, localhost, the
--admin host or an --admin-allowed-hosts name gets 403. --health-listen
serves GET /healthz, /readyz and /metrics alone, without credentials, for
probes and Prometheus.

Configuration comes from, lowest precedence first: defaults, the YAML file
named by --config, SWITCHYARD_* environment variables (the flag name in
upper case with dashes as underscores, e.g. SWITCHYARD_DRAIN_TIMEOUT=5s;
SWITCHYARD_CLUSTER takes several clusters separated by ';'), then flags.

With --control, the proxy also follows a control plane: it announces
itself (--app, --instance, --label), applies the versioned desired state it
receives (active cluster, gate), acknowledges it and reports its status.
/readyz stays unready until the first desired state is applied or
--control-wait has passed (then it serves with --active). If the control
plane goes away, the proxy keeps what it applied and reconnects. The bearer
token comes from --control-token-file or SWITCHYARD_CONTROL_TOKEN; it is
only sent over TLS (--control-tls-ca), or to a loopback --control address,
or with --control-allow-plaintext-token (a service mesh encrypts). Without
--instance the instance is SWITCHYARD_POD_NAMESPACE/SWITCHYARD_POD_NAME
(set by the sidecar injector), else the host name.

Example:
  switchyard proxy --cluster source=kafka-a:9092 --cluster target=b-1.msk:9092 \
    --active source --listen 127.0.0.1:9092 --admin 127.0.0.1:9190 \
    [--control switchyard-control:9180 --app orders --label role=producer]

Flags:
`

// parseProxyOptions builds the options from args, the environment and the
// config file. Errors name the flag, variable or field at fault.
func parseProxyOptions(args []string, getenv func(string) string, stderr io.Writer) (proxyOptions, error) {
	opts := proxyOptions{
		Proxy: proxy.DefaultConfig(), Admin: admin.DefaultConfig(), Control: controlclient.DefaultConfig(),
		LogLevel: "info", LogFormat: "json",
	}
	// The TLS flags first: the control client's configuration is checked
	// as a whole (a token needs TLS off loopback).
	controlTLS, args, err := splitControlTLSFlags(args, getenv)
	if err != nil {
		return opts, usageError{err}
	}

	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, proxyUsage)
		fs.PrintDefaults()
	}
	var clusters, labels multiFlag
	configPath := fs.String("config", "", "YAML configuration `file`")
	// Every other flag is read back by name below, after the config file
	// and the environment, so precedence is applied in one place.
	for _, f := range []struct{ name, def, help string }{
		{"active", "", "`name` of the cluster routed to at start (required with several clusters)"},
		{"listen", opts.Proxy.Listen, "bootstrap listener `host:port` clients connect to"},
		{"admin", opts.Admin.Listen, "admin API listener `host:port` (gRPC, REST, metrics, health); beyond loopback it needs --admin-token-file or --admin-tls-ca"},
		{"health-listen", "", "read-only listener `host:port` for GET /healthz, /readyz and /metrics, without credentials (probes, Prometheus); empty: none"},
		{"admin-token-file", "", "`file` holding the bearer token every admin API call must carry (or the token itself in SWITCHYARD_ADMIN_TOKEN)"},
		{"admin-tls-cert", "", "PEM `file` of the admin API's TLS certificate (serves TLS only)"},
		{"admin-tls-key", "", "PEM `file` of the key of --admin-tls-cert"},
		{"admin-tls-ca", "", "PEM `file` of the CA admin clients' certificates must chain to (mTLS: a verified certificate stands in for the token)"},
		{"admin-allowed-hosts", "", "comma-separated host `names` callers may dial the admin API by, beyond IP addresses, localhost and the --admin host (others are refused as DNS rebinding)"},
		{"forbidden-api-keys", "", "comma-separated API `keys` rejected with a retriable error from start (kafka-proxy compatible; 0 = Produce)"},
		{"advertise-host", "", "`host` put in broker addresses given to clients (default: the --listen host)"},
		{"broker-port-base", "0", "virtual broker N listens on `port` base+N (0: the port after --listen's)"},
		{"broker-address-base", "", "give virtual broker N its own `address` base+N in 127.0.0.0/8, on the --listen port"},
		{"cluster-id", "", "virtual cluster `id` presented to clients (default: derived from the cluster names)"},
		{"max-frame-bytes", strconv.Itoa(int(opts.Proxy.MaxFrameBytes)), "largest request or response frame, in `bytes`"},
		{"dial-timeout", opts.Proxy.DialTimeout.String(), "upstream dial `timeout`"},
		{"drain-timeout", opts.Proxy.DrainTimeout.String(), "how long a switch waits for in-flight requests"},
		{"hold-budget", opts.Proxy.HoldBudget.String(), "how long a HOLD gate parks a request before a retriable error"},
		{"max-hold", opts.Proxy.MaxHold.String(), "longest any request is held, whatever extends it (a control plane's hold lease); keep it below the clients' request timeout"},
		{"max-held-bytes", strconv.FormatInt(opts.Proxy.MaxHeldBytes, 10), "`bytes` of requests HOLD gates and a draining switch may park at once; beyond, they are answered as REJECT"},
		{"max-connections", strconv.Itoa(opts.Proxy.MaxConnections), "client connections served at once; more are closed on accept"},
		{"max-inflight-per-connection", strconv.Itoa(opts.Proxy.MaxInflightPerConnection), "requests of one connection forwarded and unanswered; beyond, the client is not read until a response goes out"},
		{"idle-timeout", opts.Proxy.IdleTimeout.String(), "close a client connection silent this long with nothing in flight"},
		{"client-io-timeout", opts.Proxy.ClientIOTimeout.String(), "time to read one request (first byte to last) or write one response, before the connection is closed"},
		{"max-virtual-brokers", strconv.Itoa(opts.Proxy.MaxVirtualBrokers), "virtual brokers (listeners) made for one cluster's node ids; ids beyond are presented as -1"},
		{"routing", proxy.RoutingLeader, "where a Produce goes: leader (each partition to its leader, a request split by leader) or broker (to the broker behind the client's virtual broker)"},
		{"stop-timeout", opts.Proxy.StopTimeout.String(), "how long a stopping proxy waits for the connections it closed"},
		{"producer-id-expiry", opts.Proxy.ProducerIDExpiry.String(), "forget an idempotent producer unused this long (the clusters' producer.id.expiration.ms)"},
		{"max-producer-ids", strconv.Itoa(opts.Proxy.MaxProducerIDs), "idempotent producers followed at most; beyond, the least recently used is forgotten"},
		{"max-transaction-timeout", opts.Proxy.MaxTransactionTimeout.String(), "longest transaction timeout assumed for a transactional producer (the clusters' transaction.max.timeout.ms)"},
		{"log-level", opts.LogLevel, "`level`: debug, info, warn, error"},
		{"log-format", opts.LogFormat, "`format`: json or console"},
		{"control", "", "control plane gRPC `host:port`; the proxy then follows its desired state (needs --app)"},
		{"app", "", "application `name` announced to the control plane"},
		{"instance", "", "instance `id` announced to the control plane, unique within the application (default: namespace/pod from SWITCHYARD_POD_NAMESPACE and SWITCHYARD_POD_NAME, else the host name)"},
		{"control-token-file", "", "`file` holding the bearer token for the control plane (or the token itself in SWITCHYARD_CONTROL_TOKEN)"},
		{"control-wait", opts.Control.StartupWait.String(), "how long /readyz waits for the control plane's first desired state before the proxy serves with --active"},
		{"control-status-interval", opts.Control.StatusInterval.String(), "how often the status is reported to the control plane"},
	} {
		fs.String(f.name, f.def, f.help)
	}
	fs.Bool("control-allow-plaintext-token", false, "send the control plane's token without TLS to a --control address that is not loopback "+
		"(only where something else encrypts the connection, e.g. a service mesh)")
	fs.Var(&clusters, "cluster", "upstream cluster as `name=host:port[,host:port...]`; repeat for each cluster")
	fs.Var(&labels, "label", "`key=value` label announced to the control plane; repeat for each label (SWITCHYARD_LABEL: k=v,k=v)")
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
	// 2. Environment, then 3. flags, for every flag but --config. origins
	// remembers which flag or variable set an option, for error messages.
	origins := map[string]string{}
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
		src := "--" + f.Name
		if !set[f.Name] {
			src = env
		}
		origins[f.Name] = src
		if e := applyProxyOption(&opts, f.Name, value); e != nil {
			err = usageError{fmt.Errorf("%s: %w", src, e)}
		}
	})
	if err != nil {
		return opts, err
	}
	tok, err := settleToken("control-token-file", &opts.ControlTokenFile, set["control-token-file"], getenv, opts.Control.Address != "")
	if err != nil {
		return opts, usageError{err}
	}
	if tok != "" {
		opts.Control.Token = tok
	}
	tok, err = settleToken("admin-token-file", &opts.AdminTokenFile, set["admin-token-file"], getenv, true)
	if err != nil {
		return opts, usageError{err}
	}
	opts.Admin.Token = admin.Secret(tok)
	if err := opts.Proxy.Validate(); err != nil {
		return opts, usageError{err}
	}
	if err := validateAdmin(opts.Admin, origins); err != nil {
		return opts, usageError{err}
	}
	switch opts.LogFormat {
	case "json", "console":
	default:
		return opts, usageError{fmt.Errorf("log-format: %q: want json or console", opts.LogFormat)}
	}
	if controlTLS.Enabled() {
		if opts.Control.Address == "" {
			return opts, usageError{errors.New("--control-tls-*: need a control plane (--control)")}
		}
		if err := controlTLS.Validate(controlTLSFlag); err != nil {
			return opts, usageError{err}
		}
		opts.Control.TLS = controlTLS
	}
	if err := validateControl(&opts, getenv); err != nil {
		return opts, usageError{err}
	}
	return opts, nil
}

// settleToken settles where a bearer token comes from and reads it. Layers
// as for every option, with SWITCHYARD_<NAME>_TOKEN (the token itself) in
// the environment layer beside SWITCHYARD_<NAME>_TOKEN_FILE: the flag
// fileFlag (--control-token-file, say), else either variable (not both),
// else the config file's key. The token file is read only when read is
// true (a control token without a control plane is not). It returns the
// token, "" when none is configured.
func settleToken(fileFlag string, file *string, flagSet bool, getenv func(string) string, read bool) (string, error) {
	env := "SWITCHYARD_" + strings.ToUpper(strings.ReplaceAll(strings.TrimSuffix(fileFlag, "-file"), "-", "_"))
	var token string
	if tok := getenv(env); tok != "" && !flagSet {
		if getenv(env+"_FILE") != "" {
			return "", fmt.Errorf("%s and %s_FILE: set one, not both", env, env)
		}
		*file = ""
		token = strings.TrimSpace(tok)
	}
	if *file == "" || !read {
		return token, nil
	}
	token, err := readTokenFile(*file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", fileFlag, err)
	}
	return token, nil
}

// validateAdmin checks the admin API's options, with errors that name the
// flag or variable that set them (origins, by flag name; an option missing
// there came from the config file or the default). The rule that matters
// most is checked first: an admin API beyond loopback needs credentials.
func validateAdmin(c admin.Config, origins map[string]string) error {
	name := func(flagName, fileKey string) string {
		if o := origins[flagName]; o != "" {
			return o
		}
		return "--" + flagName + " (" + fileKey + " in the config file)"
	}
	if host, _, err := net.SplitHostPort(c.Listen); err == nil && !admin.IsLoopback(host) && !c.Authenticated() {
		return fmt.Errorf("%s %s: not a loopback address, and neither --admin-token-file (SWITCHYARD_ADMIN_TOKEN) nor --admin-tls-ca is set: "+
			"anyone who reaches the port could gate and switch this proxy; listen on 127.0.0.1 (expose --health-listen for probes and metrics) "+
			"or configure a token or mTLS", name("admin", "admin"), c.Listen)
	}
	if err := c.TLS.ValidateServer("--admin-tls"); err != nil {
		return fmt.Errorf("%w (or adminTls in the config file)", err)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("admin (--admin, --health-listen, --admin-allowed-hosts, adminTls in the config file): %w", err)
	}
	return nil
}

// validateControl checks the control-plane options when a control plane is
// set, after filling in the default instance.
func validateControl(o *proxyOptions, getenv func(string) string) error {
	c := &o.Control
	if c.Address == "" {
		return nil
	}
	if c.App == "" {
		return errors.New("app: required with a control plane (--app, SWITCHYARD_APP or app: in the config file)")
	}
	if c.Instance == "" {
		c.Instance = defaultInstance(getenv)
		if c.Instance == "" {
			return errors.New("instance: no host name to default to; set --instance")
		}
	}
	if c.StartupWait < 0 {
		return fmt.Errorf("control-wait: %v must not be negative", c.StartupWait)
	}
	if c.StatusInterval <= 0 {
		return fmt.Errorf("control-status-interval: %v must be positive", c.StatusInterval)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("control %w", err)
	}
	return nil
}

// defaultInstance is namespace/pod when the sidecar injector's variables
// say so (pod names are unique only within a namespace), else the host
// name.
func defaultInstance(getenv func(string) string) string {
	if pod := getenv("SWITCHYARD_POD_NAME"); pod != "" {
		if ns := getenv("SWITCHYARD_POD_NAMESPACE"); ns != "" {
			return ns + "/" + pod
		}
		return pod
	}
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	return host
}

// applyProxyOption sets one option from its flag name and string value.
func applyProxyOption(o *proxyOptions, name, value string) error {
	var err error
	switch name {
	case "cluster":
		// A cluster named again here keeps the TLS and SASL settings the
		// config file gave it (they have no flags).
		security := map[string]kafkasec.Config{}
		for _, c := range o.Proxy.Clusters {
			security[c.Name] = c.Config
		}
		o.Proxy.Clusters = nil
		for _, spec := range strings.Split(value, ";") {
			if strings.TrimSpace(spec) == "" {
				continue
			}
			c, e := parseClusterSpec(spec)
			if e != nil {
				return e
			}
			c.Config = security[c.Name]
			o.Proxy.Clusters = append(o.Proxy.Clusters, c)
		}
	case "active":
		o.Proxy.Active = value
	case "listen":
		o.Proxy.Listen = value
	case "admin":
		o.Admin.Listen = value
	case "health-listen":
		o.Admin.HealthListen = value
	case "admin-token-file":
		o.AdminTokenFile = value
	case "admin-tls-cert":
		o.Admin.TLS.CertFile = value
	case "admin-tls-key":
		o.Admin.TLS.KeyFile = value
	case "admin-tls-ca":
		o.Admin.TLS.CAFile = value
	case "admin-allowed-hosts":
		o.Admin.AllowedHosts = nil
		for _, h := range strings.Split(value, ",") {
			if h = strings.TrimSpace(h); h != "" {
				o.Admin.AllowedHosts = append(o.Admin.AllowedHosts, h)
			}
		}
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
	case "max-hold":
		o.Proxy.MaxHold, err = time.ParseDuration(value)
	case "max-held-bytes":
		o.Proxy.MaxHeldBytes, err = strconv.ParseInt(value, 10, 64)
	case "max-connections":
		o.Proxy.MaxConnections, err = strconv.Atoi(value)
	case "max-inflight-per-connection":
		o.Proxy.MaxInflightPerConnection, err = strconv.Atoi(value)
	case "idle-timeout":
		o.Proxy.IdleTimeout, err = time.ParseDuration(value)
	case "client-io-timeout":
		o.Proxy.ClientIOTimeout, err = time.ParseDuration(value)
	case "max-virtual-brokers":
		o.Proxy.MaxVirtualBrokers, err = strconv.Atoi(value)
	case "routing":
		o.Proxy.Routing = value
	case "stop-timeout":
		o.Proxy.StopTimeout, err = time.ParseDuration(value)
	case "producer-id-expiry":
		o.Proxy.ProducerIDExpiry, err = time.ParseDuration(value)
	case "max-producer-ids":
		o.Proxy.MaxProducerIDs, err = strconv.Atoi(value)
	case "max-transaction-timeout":
		o.Proxy.MaxTransactionTimeout, err = time.ParseDuration(value)
	case "log-level":
		o.LogLevel = value
	case "log-format":
		o.LogFormat = value
	case "control":
		o.Control.Address = value
	case "app":
		o.Control.App = value
	case "instance":
		o.Control.Instance = value
	case "label":
		labels, e := parseLabels(value)
		if e != nil {
			return e
		}
		o.Control.Labels = labels
	case "control-token-file":
		o.ControlTokenFile = value
	case "control-wait":
		o.Control.StartupWait, err = time.ParseDuration(value)
	case "control-status-interval":
		o.Control.StatusInterval, err = time.ParseDuration(value)
	case "control-allow-plaintext-token":
		o.Control.AllowPlaintextToken, err = strconv.ParseBool(value)
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

// parseLabels parses key=value labels separated by ',' or ';' (the
// repeated --label flag arrives joined by ';'). Label syntax itself is
// checked by controlclient.Config.Validate.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", f)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		labels[k] = v
	}
	return labels, nil
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
	// clientAuth is decoded onto the current settings, so that the
	// settings a file's clientAuth leaves out keep their defaults.
	f := proxyFile{ClientAuth: o.Proxy.ClientAuth}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	set(&o.Proxy.Listen, f.Listen)
	set(&o.Admin.Listen, f.Admin)
	set(&o.Admin.HealthListen, f.HealthListen)
	set(&o.AdminTokenFile, f.AdminTokenFile)
	if f.AdminTLS.ServerName != "" || f.AdminTLS.InsecureSkipVerify {
		return fmt.Errorf("config file %s: adminTls.serverName, adminTls.insecureSkipVerify: client settings; the admin server does not use them", path)
	}
	o.Admin.TLS = f.AdminTLS
	if f.AdminAllowedHosts != nil {
		o.Admin.AllowedHosts = f.AdminAllowedHosts
	}
	set(&o.Proxy.Active, f.Active)
	set(&o.Proxy.AdvertiseHost, f.AdvertiseHost)
	set(&o.Proxy.BrokerAddressBase, f.BrokerAddressBase)
	set(&o.Proxy.ClusterID, f.ClusterID)
	set(&o.LogLevel, f.LogLevel)
	set(&o.LogFormat, f.LogFormat)
	if len(f.Clusters) > 0 {
		o.Proxy.Clusters = f.Clusters
	}
	o.Proxy.ClientAuth = f.ClientAuth
	if len(f.ForbiddenAPIKeys) > 0 {
		o.Proxy.Gate = proxy.Gate{APIKeys: f.ForbiddenAPIKeys, Mode: proxy.GateReject}
	}
	if f.BrokerPortBase != nil {
		o.Proxy.BrokerPortBase = *f.BrokerPortBase
	}
	set(&o.Proxy.MaxFrameBytes, f.MaxFrameBytes)
	set(&o.Proxy.DialTimeout, f.DialTimeout)
	set(&o.Proxy.DrainTimeout, f.DrainTimeout)
	set(&o.Proxy.HoldBudget, f.HoldBudget)
	set(&o.Proxy.MaxHold, f.MaxHold)
	set(&o.Proxy.MaxHeldBytes, f.MaxHeldBytes)
	set(&o.Proxy.MaxConnections, f.MaxConnections)
	set(&o.Proxy.MaxInflightPerConnection, f.MaxInflight)
	set(&o.Proxy.IdleTimeout, f.IdleTimeout)
	set(&o.Proxy.ClientIOTimeout, f.ClientIOTimeout)
	set(&o.Proxy.MaxVirtualBrokers, f.MaxVirtualBrokers)
	set(&o.Proxy.Routing, f.Routing)
	set(&o.Proxy.StopTimeout, f.StopTimeout)
	set(&o.Proxy.ProducerIDExpiry, f.ProducerIDExpiry)
	set(&o.Proxy.MaxProducerIDs, f.MaxProducerIDs)
	set(&o.Proxy.MaxTransactionTimeout, f.MaxTxnTimeout)
	set(&o.Control.Address, f.Control)
	set(&o.Control.App, f.App)
	set(&o.Control.Instance, f.Instance)
	set(&o.ControlTokenFile, f.ControlTokenFile)
	if f.Labels != nil {
		o.Control.Labels = f.Labels
	}
	if f.ControlWait != nil {
		o.Control.StartupWait = *f.ControlWait
	}
	set(&o.Control.StatusInterval, f.ControlStatusInterval)
	set(&o.Control.AllowPlaintextToken, f.ControlAllowPlaintextToken)
	return nil
}

// set overwrites *dst with v unless v is the zero value (the file leaves
// the option alone).
func set[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ";") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
