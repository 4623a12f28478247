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
	"github.com/switchyard/switchyard/mirror"
)

const controlUsage = `Usage: switchyard control --config control.yaml [flags]

Runs the control plane: the ControlService API (gRPC and REST on one port,
OpenAPI at /v1/openapi.json), the registry the proxy sidecars connect to
(switchyard proxy --control ADDR --app NAME), the mirrors it is configured
with, and the cutovers started through the API or switchyard ctl.

The configuration file:

  listen: 127.0.0.1:9180
  tokenFile: /etc/switchyard/token    # or SWITCHYARD_CONTROL_TOKEN; required
                                      # unless listen is a loopback address
  readAuth: false                     # true: reads need the token too
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
	Listen    string           `yaml:"listen"`
	TokenFile string           `yaml:"tokenFile"`
	ReadAuth  bool             `yaml:"readAuth"`
	StoreDir  string           `yaml:"storeDir"`
	Clusters  []controlCluster `yaml:"clusters"`
	Mirrors   []controlMirror  `yaml:"mirrors"`
}

type controlCluster struct {
	Name      string   `yaml:"name"`
	Bootstrap []string `yaml:"bootstrap"`
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

// validate checks the configuration and resolves the mirrors' clusters.
// token is the bearer token, already read.
func (c *controlConfig) validate(token string) error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %q: %w", c.Listen, err)
	}
	if token == "" {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("tokenFile: required when listen (%s) is not a loopback address: anyone who reaches the port could move clients between clusters", c.Listen)
		}
	}
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
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("tokenFile: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("tokenFile: %s is empty", file)
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
	token, err := readToken(cfg.TokenFile, getenv)
	if err != nil {
		return usageError{fmt.Errorf("config file %s: %w", *configPath, err)}
	}
	if err := cfg.validate(token); err != nil {
		return usageError{fmt.Errorf("config file %s: %w", *configPath, err)}
	}
	log, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	return serveControl(ctx, cfg, token, nil, log)
}

// serveControl runs a control plane from a validated configuration. ready,
// when not nil, receives the listening address once serving.
func serveControl(ctx context.Context, cfg controlConfig, token string, ready chan<- net.Addr, log *zap.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pc := control.PlaneConfig{
		Server:   control.ServerConfig{Listen: cfg.Listen, Token: token, ReadAuth: cfg.ReadAuth},
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
		zap.Int("mirrors", len(pc.Mirrors)), zap.Bool("auth", token != ""))
	return plane.Run(ctx)
}
