package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/mirror"
)

const controlUsage = `Usage: switchyard control --config control.yaml [flags]

Runs the control plane: the ControlService API (gRPC and REST on one port,
OpenAPI at /v1/openapi.json), the registry the proxy sidecars connect to
(switchyard proxy --control ADDR --app NAME), the mirrors it is configured
with, and the cutovers started through the API or switchyard ctl.

The configuration file:

  listen: 127.0.0.1:9180
  tokenFile: /etc/switchyard/token    # an operator token (or SWITCHYARD_CONTROL_TOKEN)
  tokens:                             # further named tokens, each read from a file
    - {name: ci, role: operator, file: /etc/switchyard/tokens/ci}
    - {name: grafana, role: read-only, file: /etc/switchyard/tokens/grafana}
    - {name: shop, role: sidecar, file: /etc/switchyard/tokens/shop,
       apps: [orders, billing], instances: ["shop/*"]}   # one per namespace
  tls:                                # serve TLS (gRPC and REST, same port)
    certFile: /etc/switchyard/tls/tls.crt   # re-read when the files change
    keyFile: /etc/switchyard/tls/tls.key
    caFile: /etc/switchyard/tls/ca.crt      # client CA: mTLS, certificates required
    clientCertOptional: false               # true: token-only clients too
  clientCertificates:                 # verified client certificates -> roles, by
    - {identity: "spiffe://cluster.local/ns/shop/sa/orders", role: sidecar, apps: [orders]}  # URI/DNS SAN
    - {identity: "shop/orders-*", role: sidecar, apps: [orders], bindInstance: true}  # or CN
    - {identity: alice, role: operator}
  auditFile: /var/lib/switchyard/audit.jsonl  # mutating calls, one JSON line each
  limits:                             # what one caller may make it hold (0: default)
    sidecarsPerCredential: 256        # open streams and remembered sidecars per token,
                                      # clientCertificates entry, or anonymous
    messageBytes: 262144              # largest gRPC message received (a sidecar's report)
    streamsPerConnection: 100         # HTTP/2 concurrent streams per connection
  readAuth: false                     # true: reads need a read-only or operator role
  allowPlaintextTokens: false         # true: accept tokens without TLS off loopback
  allowOperatorSidecars: false        # true: sidecars may use operator credentials off
                                      # loopback (upgrades only; each stream warned)
  allowedHosts: [switchyard-control.switchyard.svc]  # names REST clients dial it by,
                                      # beyond IPs, localhost and the listen host
                                      # (others: 403, DNS rebinding)
  # Without tokens or tls.caFile, listen must be a loopback address; with
  # tokens, a listen address that is not loopback needs TLS (or
  # allowPlaintextTokens, where a service mesh encrypts the connection).
  # Roles: read-only (list, get, watch), operator (also create and abort
  # cutovers, declare state; connect as any sidecar only on loopback or
  # with allowOperatorSidecars), sidecar (only connect, as one of its apps
  # and instances; with bindInstance, as an instance its certificate
  # names).
  storeDir: /var/lib/switchyard       # cutovers and desired state (atomic files)
  clusters:
    - name: source
      bootstrap: [kafka-1:9092]
    - name: target
      bootstrap: [b-1.msk.example:9092]
  mirrors:
    - name: orders                    # a mirror config (switchyard mirror --help)
      source: source                  # ... whose bootstrap comes from these clusters
      target: target
      topics: {include: ["orders\\..*"]}
      groups: [".*"]

Flags:
`

// controlConfig is the control plane's configuration file.
type controlConfig struct {
	Listen                string                `yaml:"listen"`
	TokenFile             string                `yaml:"tokenFile"`
	Tokens                []controlNamedToken   `yaml:"tokens"`
	TLS                   controlTLS            `yaml:"tls"`
	ClientCertificates    []controlCertIdentity `yaml:"clientCertificates"`
	AuditFile             string                `yaml:"auditFile"`
	ReadAuth              bool                  `yaml:"readAuth"`
	AllowPlaintextTokens  bool                  `yaml:"allowPlaintextTokens"`
	AllowOperatorSidecars bool                  `yaml:"allowOperatorSidecars"`
	AllowedHosts          []string              `yaml:"allowedHosts"`
	Limits                controlLimits         `yaml:"limits"`
	StoreDir              string                `yaml:"storeDir"`
	Clusters              []controlCluster      `yaml:"clusters"`
	Mirrors               []controlMirror       `yaml:"mirrors"`
}

// controlNamedToken is a named token whose value is read from File; Apps
// are the applications a sidecar token may claim, Instances (optional) the
// instances.
type controlNamedToken struct {
	Name      string   `yaml:"name"`
	Role      string   `yaml:"role"`
	File      string   `yaml:"file"`
	Apps      []string `yaml:"apps"`
	Instances []string `yaml:"instances"`
}

// controlLimits are control.Limits; zero takes the default.
type controlLimits struct {
	SidecarsPerCredential int `yaml:"sidecarsPerCredential"`
	MessageBytes          int `yaml:"messageBytes"`
	StreamsPerConnection  int `yaml:"streamsPerConnection"`
}

// controlTLS is the server side of TLS: the serving pair and the client CA.
type controlTLS struct {
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	CAFile             string `yaml:"caFile"`
	ClientCertOptional bool   `yaml:"clientCertOptional"`
}

type controlCertIdentity struct {
	Identity     string   `yaml:"identity"`
	Role         string   `yaml:"role"`
	Apps         []string `yaml:"apps"`
	BindInstance bool     `yaml:"bindInstance"`
}

type controlCluster struct {
	Name      string   `yaml:"name"`
	Bootstrap []string `yaml:"bootstrap"`
	// TLS and SASL for the mirrors and group syncs reaching the cluster.
	kafkasec.Config `yaml:",inline"`
}

type controlMirror struct {
	mirror.Config `yaml:",inline"`
	Source        string `yaml:"source"`
	Target        string `yaml:"target"`
}

// UnmarshalYAML starts each mirror from mirror.DefaultConfig.
func (m *controlMirror) UnmarshalYAML(n *yaml.Node) error {
	type plain controlMirror
	p := plain{Config: mirror.DefaultConfig()}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*m = controlMirror(p)
	return nil
}

func loadControlConfig(path string) (controlConfig, error) {
	cfg := controlConfig{Listen: "127.0.0.1:9180", StoreDir: "switchyard-control"}
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// serverConfig reads the tokens and builds the API server's configuration,
// validated: TLS files load, roles parse, and a non-loopback listen address
// has credentials. Errors name the field and never hold a token.
func (c *controlConfig) serverConfig(getenv func(string) string) (control.ServerConfig, error) {
	sc := control.ServerConfig{
		Listen:                c.Listen,
		ReadAuth:              c.ReadAuth,
		AuditFile:             c.AuditFile,
		TLS:                   tlsfiles.Files{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, CAFile: c.TLS.CAFile},
		ClientCertOptional:    c.TLS.ClientCertOptional,
		AllowPlaintextTokens:  c.AllowPlaintextTokens,
		AllowedHosts:          c.AllowedHosts,
		AllowOperatorSidecars: c.AllowOperatorSidecars,
		Limits: control.Limits{SidecarsPerCredential: c.Limits.SidecarsPerCredential, MessageBytes: c.Limits.MessageBytes,
			StreamsPerConnection: c.Limits.StreamsPerConnection},
	}
	token, err := readToken(c.TokenFile, getenv)
	if err != nil {
		return sc, err
	}
	sc.Token = token
	var errs []error
	for i, t := range c.Tokens {
		role, err := control.ParseRole(t.Role)
		if err != nil {
			errs = append(errs, fmt.Errorf("tokens[%d].role: %w", i, err))
		}
		var value string
		if t.File == "" {
			errs = append(errs, fmt.Errorf("tokens[%d].file: required", i))
		} else if value, err = readTokenFile(t.File); err != nil {
			errs = append(errs, fmt.Errorf("tokens[%d].file: %w", i, err))
		}
		sc.Tokens = append(sc.Tokens, control.Token{Name: t.Name, Role: role, Value: control.Secret(value), Apps: t.Apps,
			Instances: t.Instances})
	}
	for i, cc := range c.ClientCertificates {
		role, err := control.ParseRole(cc.Role)
		if err != nil {
			errs = append(errs, fmt.Errorf("clientCertificates[%d].role: %w", i, err))
		}
		sc.ClientCertificates = append(sc.ClientCertificates, control.ClientCertificate{Identity: cc.Identity, Role: role,
			Apps: cc.Apps, BindInstance: cc.BindInstance})
	}
	if err := errors.Join(errs...); err != nil {
		return sc, err
	}
	return sc, sc.Validate()
}

// validate checks the rest of the configuration and resolves the mirrors'
// clusters.
func (c *controlConfig) validate() error {
	if c.StoreDir == "" {
		return errors.New("storeDir: required")
	}
	byName := map[string]*controlCluster{}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		if cl.Name == "" || byName[cl.Name] != nil {
			return fmt.Errorf("clusters[%d].name: %q is empty or repeated", i, cl.Name)
		}
		if len(cl.Bootstrap) == 0 {
			return fmt.Errorf("clusters[%d].bootstrap: at least one host:port", i)
		}
		for _, a := range cl.Bootstrap {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("clusters[%d].bootstrap: %q: %w", i, a, err)
			}
		}
		if err := cl.Config.Validate(fmt.Sprintf("clusters[%d] (%s)", i, cl.Name)); err != nil {
			return err
		}
		byName[cl.Name] = cl
	}
	if len(c.Clusters) < 2 {
		return errors.New("clusters: at least two (a source and a target)")
	}
	names := map[string]bool{}
	for i := range c.Mirrors {
		m := &c.Mirrors[i]
		src, dst := byName[m.Source], byName[m.Target]
		if src == nil || dst == nil || m.Source == m.Target {
			return fmt.Errorf("mirrors[%d] (%s): source %q and target %q must name two configured clusters", i, m.Name, m.Source, m.Target)
		}
		m.SourceBootstrap, m.TargetBootstrap = src.Bootstrap, dst.Bootstrap
		m.Config.Source, m.Config.Target = src.Config, dst.Config
		if err := m.Validate(); err != nil {
			return fmt.Errorf("mirrors[%d]: %w", i, err)
		}
		if names[m.Name] {
			return fmt.Errorf("mirrors[%d].name: %q repeated", i, m.Name)
		}
		names[m.Name] = true
	}
	return nil
}

func readToken(file string, getenv func(string) string) (string, error) {
	if file == "" {
		return strings.TrimSpace(getenv("SWITCHYARD_CONTROL_TOKEN")), nil
	}
	t, err := readTokenFile(file)
	if err != nil {
		return "", fmt.Errorf("tokenFile: %w", err)
	}
	return t, nil
}

// readTokenFile reads a token, trimmed of whitespace. Errors name the file,
// never its contents.
func readTokenFile(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return t, nil
}

// runControl runs the control plane until ctx ends.
func runControl(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("control", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, controlUsage); fs.PrintDefaults() }
	configPath := fs.String("config", getenv("SWITCHYARD_CONFIG"), "YAML configuration `file` (required)")
	listen := fs.String("listen", "", "override the configuration's listen `host:port`")
	logLevel := fs.String("log-level", "info", "`level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "json", "`format`: json or console")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if *configPath == "" {
		return usageError{errors.New("--config: a configuration file is required (see --help)")}
	}
	cfg, err := loadControlConfig(*configPath)
	if err != nil {
		return usageError{err}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	sc, err := cfg.serverConfig(getenv)
	if err != nil {
		return usageError{fmt.Errorf("config file %s: %w", *configPath, err)}
	}
	if err := cfg.validate(); err != nil {
		return usageError{fmt.Errorf("config file %s: %w", *configPath, err)}
	}
	log, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	return serveControl(ctx, cfg, sc, nil, log)
}

// serveControl runs a control plane from a validated configuration. ready,
// when not nil, receives the listening address once serving.
func serveControl(ctx context.Context, cfg controlConfig, sc control.ServerConfig, ready chan<- net.Addr, log *zap.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pc := control.PlaneConfig{
		Server:   sc,
		StoreDir: cfg.StoreDir,
	}
	for _, c := range cfg.Clusters {
		pc.Clusters = append(pc.Clusters, &switchyardv1.Cluster{Name: c.Name, Bootstrap: c.Bootstrap})
	}
	for _, m := range cfg.Mirrors {
		pc.Mirrors = append(pc.Mirrors, control.PlaneMirror{Source: m.Source, Target: m.Target, Config: m.Config})
	}
	plane, err := control.NewPlane(ctx, pc, reg, log)
	if err != nil {
		return err
	}
	if ready != nil {
		ready <- plane.Addr()
	}
	log.Info("control plane started", zap.String("listen", plane.Addr().String()), zap.Int("clusters", len(pc.Clusters)),
		zap.Int("mirrors", len(pc.Mirrors)), zap.Bool("auth", sc.Token != "" || len(sc.Tokens) > 0 || sc.TLS.CAFile != ""),
		zap.Bool("tls", sc.TLS.CertFile != ""), zap.Bool("mtls", sc.TLS.CAFile != "" && !sc.ClientCertOptional),
		zap.String("audit_file", sc.AuditFile))
	return plane.Run(ctx)
}
