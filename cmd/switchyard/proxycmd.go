package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

func runProxy(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	opts, err := parseProxyOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		printControlTLSFlags(stderr)
	}
	if err != nil {
		return err
	}
	log, err := newLogger(opts.LogLevel, opts.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(opts.Proxy, log, reg)
	if err != nil {
		return err
	}
	var (
		served  admin.Proxy = p
		control *controlclient.Client
	)
	if opts.Control.Address != "" {
		control, err = controlclient.New(opts.Control, p, reg, log)
		if err != nil {
			p.Close()
			return err
		}
		served = controlledProxy{Proxy: p, control: control}
	}
	srv, err := admin.New(opts.Admin, served, reg, log)
	if err != nil {
		p.Close()
		return err
	}
	log.Info("proxy starting", zap.String("listen", p.Addr().String()), zap.String("admin", opts.Admin.Listen),
		zap.String("health", opts.Admin.HealthListen), zap.Bool("admin_auth", opts.Admin.Authenticated()),
		zap.String("active", opts.Proxy.Active), zap.String("cluster_id", p.ClusterID()),
		zap.String("control", opts.Control.Address))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	if control != nil {
		g.Go(func() error { return control.Run(gctx) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	log.Info("proxy stopped")
	return nil
}

// controlledProxy is the proxy as the admin server sees it when a control
// plane drives it: ready once the proxy is and the control plane's desired
// state is in force, or the startup wait (--control-wait) has passed
// without one. The proxy core knows nothing of the control plane, so the
// two readinesses meet here.
type controlledProxy struct {
	*proxy.Proxy
	control *controlclient.Client
}

func (p controlledProxy) Ready() error {
	if err := p.Proxy.Ready(); err != nil {
		return err
	}
	return p.control.Ready()
}

// The control client's TLS flags. They are taken out of the arguments
// before parseProxyOptions reads the rest, and have an environment
// variable each (SWITCHYARD_CONTROL_TLS_CA, ...) that the flag overrides.
const controlTLSFlag = "--control-tls"

var controlTLSFlags = []struct{ name, env, help string }{
	{"control-tls-ca", "SWITCHYARD_CONTROL_TLS_CA", "PEM `file` of the CA the control plane's certificate must chain to; turns TLS to the control plane on"},
	{"control-tls-cert", "SWITCHYARD_CONTROL_TLS_CERT", "PEM `file` of a client certificate for the control plane (mTLS; it may stand in for the token)"},
	{"control-tls-key", "SWITCHYARD_CONTROL_TLS_KEY", "PEM `file` of the key of --control-tls-cert"},
	{"control-tls-server-name", "SWITCHYARD_CONTROL_TLS_SERVER_NAME", "`name` the control plane's certificate is verified against (default: the --control host)"},
}

// splitControlTLSFlags takes the --control-tls-* flags ("--flag value",
// "--flag=value", one dash or two) out of args, before a "--", and returns
// them, over their environment variables, with the remaining arguments.
func splitControlTLSFlags(args []string, getenv func(string) string) (tlsfiles.Files, []string, error) {
	values := map[string]string{}
	for _, f := range controlTLSFlags {
		if v := strings.TrimSpace(getenv(f.env)); v != "" {
			values[f.name] = v
		}
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		known := strings.HasPrefix(arg, "-")
		if known {
			known = false
			for _, f := range controlTLSFlags {
				known = known || f.name == name
			}
		}
		if !known {
			rest = append(rest, arg)
			continue
		}
		if !hasValue {
			if i+1 == len(args) {
				return tlsfiles.Files{}, nil, fmt.Errorf("flag needs an argument: --%s", name)
			}
			i++
			value = args[i]
		}
		values[name] = value
	}
	return tlsfiles.Files{
		CAFile:     values["control-tls-ca"],
		CertFile:   values["control-tls-cert"],
		KeyFile:    values["control-tls-key"],
		ServerName: values["control-tls-server-name"],
	}, rest, nil
}

// printControlTLSFlags adds the control client's TLS flags to --help.
func printControlTLSFlags(w io.Writer) {
	for _, f := range controlTLSFlags {
		name, usage := flag.UnquoteUsage(&flag.Flag{Name: f.name, Usage: f.help})
		fmt.Fprintf(w, "  -%s %s\n    \t%s (env %s)\n", f.name, name, usage, f.env)
	}
}

func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}
