package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/deploy/injector"
)

const injectUsage = `Usage: switchyard inject [flags]

Serves the sidecar injector, a Kubernetes mutating admission webhook, over
HTTPS: POST /mutate takes an AdmissionReview v1 and adds the proxy sidecar
to pods annotated switchyard.io/inject: "true". Also GET /healthz and
GET /metrics. The certificate and key files are re-read when they change
(cert-manager renews them in place).

The sidecar is described by a YAML file (--config; see
deploy/helm/switchyard/values.yaml, injector.sidecar); --image overrides its
image. Each flag can also be set as SWITCHYARD_<FLAG> in the environment
(upper case, dashes as underscores); flags win.

Example:
  switchyard inject --listen :8443 --tls-cert /tls/tls.crt --tls-key /tls/tls.key \
    --config /etc/switchyard/injector.yaml

Flags:
`

// injectOptions is everything `switchyard inject` is configured with.
type injectOptions struct {
	Listen    string
	CertFile  string
	KeyFile   string
	Injector  injector.Config
	LogLevel  string
	LogFormat string
}

func runInject(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	opts, err := parseInjectOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(opts.LogLevel, opts.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	certs, err := newCertReloader(opts.CertFile, opts.KeyFile)
	if err != nil {
		return usageError{err}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, err := injector.NewHandler(opts.Injector, log, reg)
	if err != nil {
		return usageError{err}
	}
	mux := http.NewServeMux()
	mux.Handle("/mutate", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// The API server gives a webhook at most 30 s (10 s by default).
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  90 * time.Second,
		ErrorLog:     zap.NewStdLog(log.Named("http")),
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get},
	}
	log.Info("injector listening", zap.String("addr", ln.Addr().String()), zap.String("image", opts.Injector.Image))

	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("injector stopped")
	return nil
}

// parseInjectOptions reads flags, then the environment for flags not given,
// then the injector config file. Errors name the flag or variable at fault.
func parseInjectOptions(args []string, getenv func(string) string, stderr io.Writer) (injectOptions, error) {
	opts := injectOptions{Injector: injector.DefaultConfig()}
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, injectUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.Listen, "listen", "127.0.0.1:8443", "HTTPS listener `host:port` (\":8443\" in a pod)")
	fs.StringVar(&opts.CertFile, "tls-cert", "", "TLS certificate `file` (PEM, with the chain); required")
	fs.StringVar(&opts.KeyFile, "tls-key", "", "TLS private key `file` (PEM); required")
	configPath := fs.String("config", "", "injector configuration YAML `file` (the sidecar to inject)")
	image := fs.String("image", "", "sidecar `image`, overriding the config file's")
	fs.StringVar(&opts.LogLevel, "log-level", "info", "`level`: debug, info, warn, error")
	fs.StringVar(&opts.LogFormat, "log-format", "json", "`format`: json or console")
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
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "SWITCHYARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if err != nil || set[f.Name] || getenv(env) == "" {
			return
		}
		if e := f.Value.Set(getenv(env)); e != nil {
			err = usageError{fmt.Errorf("%s: %w", env, e)}
		}
	})
	if err != nil {
		return opts, err
	}
	if *configPath != "" {
		if err := loadInjectorFile(*configPath, &opts.Injector); err != nil {
			return opts, usageError{err}
		}
	}
	if *image != "" {
		opts.Injector.Image = *image
	}
	switch {
	case opts.CertFile == "" || opts.KeyFile == "":
		return opts, usageError{errors.New("--tls-cert and --tls-key are required: the API server calls webhooks over HTTPS only")}
	case opts.LogFormat != "json" && opts.LogFormat != "console":
		return opts, usageError{fmt.Errorf("log-format: %q: want json or console", opts.LogFormat)}
	}
	if err := opts.Injector.Validate(); err != nil {
		src := "injector config"
		if *configPath != "" {
			src = "config file " + *configPath
		}
		return opts, usageError{fmt.Errorf("%s: %w", src, err)}
	}
	return opts, nil
}

// loadInjectorFile decodes the YAML file at path onto cfg (the defaults).
// A resources section replaces the default requests and limits whole.
func loadInjectorFile(path string, cfg *injector.Config) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(raw, &keys); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if _, ok := keys["resources"]; ok {
		cfg.Resources = injector.Resources{}
	}
	if _, ok := keys["appLabels"]; ok {
		cfg.AppLabels = nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// certReloader serves a key pair from files, re-reading them when either
// file's modification time changes. Safe for concurrent use.
type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modCert time.Time
	modKey  time.Time
}

// newCertReloader loads the key pair once, so that a bad file is reported at
// start rather than at the first handshake.
func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.get(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// get returns the current certificate; if reloading fails, it keeps
// serving the last good one (a renewal may be half written).
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ci, errC := os.Stat(r.certFile)
	ki, errK := os.Stat(r.keyFile)
	if err := errors.Join(errC, errK); err != nil {
		if r.cert != nil {
			return r.cert, nil
		}
		return nil, fmt.Errorf("tls key pair: %w", err)
	}
	if r.cert != nil && ci.ModTime().Equal(r.modCert) && ki.ModTime().Equal(r.modKey) {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil
		}
		return nil, fmt.Errorf("tls key pair: %w", err)
	}
	r.cert, r.modCert, r.modKey = &cert, ci.ModTime(), ki.ModTime()
	return r.cert, nil
}
