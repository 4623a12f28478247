package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/mirror"
)

const mirrorUsage = `Usage: switchyard mirror --config mirror.yaml [flags]

Runs the mirror engine: copies the selected topics from the source cluster
to the target inside Kafka transactions, record batches whole (compressed
bytes are not recompressed), keeps an exact offset map on the
target (topic __switchyard_mirror_<name>) and syncs consumer-group offsets
exactly. Restarting with the same name resumes with no gap and no duplicate.

The configuration file:

  name: orders-migration
  sourceBootstrap: [kafka-1:9092]
  targetBootstrap: [b-1.msk.example:9092]
  topics:
    include: ["orders\\..*", "payments"]   # whole-name regexps; empty = all
    exclude: []
    includeInternal: []                   # e.g. _schemas, connect-configs
    prefix: ""                            # "" keeps names
  groups: [".*"]                          # groups whose offsets are synced
  txnMaxRecords: 100000                   # bounds of one target transaction
  txnMaxBytes: 16777216
  txnMaxInterval: 500ms
  txnTimeout: 15s
  acls: false                             # copy topic and group ACLs
  scaleOut: false                         # share partitions among processes of this name
  instance: ""                            # with scaleOut; default: the host name
  gaps:                                   # records the source deleted before they were copied
    default: stop                         # stop the partition, or continue after the gap
    continue: [".*-repartition"]          # topics that continue (Kafka Streams purges these)
    stop: []

The status endpoint (--http) serves GET /v1/status (JSON), /metrics,
/healthz and /readyz.

Flags:
`

func runMirror(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("mirror", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mirrorUsage); fs.PrintDefaults() }
	configPath := fs.String("config", getenv("SWITCHYARD_CONFIG"), "YAML configuration `file` (required)")
	httpAddr := fs.String("http", "127.0.0.1:9191", "status, metrics and health `host:port`")
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
	cfg, err := loadMirrorConfig(*configPath)
	if err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("config file %s: %w", *configPath, err)}
	}
	log, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mr, err := mirror.New(cfg, log, reg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *httpAddr, err)
	}
	srv := &http.Server{Handler: mirrorHTTP(mr, reg), ReadHeaderTimeout: 10 * time.Second}
	log.Info("mirror starting", zap.String("name", cfg.Name), zap.String("http", ln.Addr().String()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mr.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("status server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

func mirrorHTTP(mr *mirror.Mirror, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if st := mr.Status(); !st.Ready {
			http.Error(w, "not ready: "+st.LastError, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(mr.Status())
	})
	return mux
}

func loadMirrorConfig(path string) (mirror.Config, error) {
	cfg := mirror.DefaultConfig()
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
