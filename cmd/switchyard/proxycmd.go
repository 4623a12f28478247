package main

import (
	"context"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

func runProxy(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	opts, err := parseProxyOptions(args, getenv, stderr)
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
