package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/apiguard"
	"github.com/switchyard/switchyard/internal/tlsfiles"
)

// Server is the admin server of one proxy. Create it with New and run it
// with Serve or Run, once.
type Server struct {
	cfg    Config
	logger *zap.Logger
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	tls    *tls.Config // nil: plaintext (h2c)
	// probes serves the health listener: GET /healthz, /readyz, /metrics.
	probes *http.Server

	mu            sync.Mutex
	started       bool
	healthStarted bool
	addr          net.Addr
	healthAddr    net.Addr
}

// New builds a Server for p. Metrics served on /metrics come from gatherer
// (typically the registry the proxy registers its metrics on). A nil logger
// logs nothing. New validates cfg (see Config.Validate) and loads the TLS
// files; it does not listen: Serve, ServeHealth or Run do.
func New(cfg Config, p Proxy, gatherer prometheus.Gatherer, logger *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("admin config: %w", err)
	}
	if p == nil {
		return nil, errors.New("admin: nil Proxy")
	}
	if gatherer == nil {
		return nil, errors.New("admin: nil prometheus.Gatherer")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Server{cfg: cfg, logger: logger}
	if cfg.TLS.CertFile != "" {
		// With a client CA and no token, the certificate is the only
		// credential: the handshake requires one. With a token too, a
		// caller may have either.
		tlsCfg, err := tlsfiles.ServerConfig(cfg.TLS, cfg.TLS.CAFile != "" && cfg.Token == "",
			tlsfiles.OnReloadError(func(err error) { logger.Error("admin: TLS files changed but do not load", zap.Error(err)) }))
		if err != nil {
			return nil, fmt.Errorf("admin: tls: %w", err)
		}
		s.tls = tlsCfg
	}
	g := newGuard(cfg, logger)
	svc := &service{proxy: p, logger: logger}

	// Every gRPC call goes through the guard's rules (see guard); REST
	// calls meet the same rules in restHandler.
	unary, stream := apiguard.Interceptors(g.checkCall)
	s.grpc = grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	switchyardv1.RegisterProxyAdminServiceServer(s.grpc, svc)
	// gRPC health reports liveness only (SERVING until shutdown begins):
	// health.Server keeps static statuses, and readiness, which changes with
	// the proxy's upstreams, is what /readyz answers on every request.
	s.health = health.NewServer()
	s.health.SetServingStatus(switchyardv1.ProxyAdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)

	// The gateway calls svc directly (RegisterProxyAdminServiceHandlerServer)
	// instead of dialling our own gRPC port: no loopback connection to
	// manage, and REST and gRPC still share svc's validation and errors.
	// The default marshaler gives camelCase JSON names and emits unset fields,
	// so a client sees "gate": null rather than a missing key.
	gw := runtime.NewServeMux()
	if err := switchyardv1.RegisterProxyAdminServiceHandlerServer(context.Background(), gw, svc); err != nil {
		return nil, fmt.Errorf("admin: register gateway: %w", err)
	}

	openapi := switchyardv1.ProxyAdminOpenAPI()
	probes := probeMux(p, gatherer, logger, true)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", probes)
	mux.Handle("GET /healthz", probes)
	mux.Handle("GET /readyz", probes)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi) // a failed write means the client left
	})
	mux.Handle("/", gw) // /v1/status, /v1/switch, /v1/gates; JSON 404 otherwise
	// Admin requests are tiny; bound bodies so a stray upload cannot eat
	// the sidecar's memory. (gRPC has its own 4 MiB message limit.)
	rest := g.restHandler(http.MaxBytesHandler(mux, 1<<20))

	// One port for gRPC and HTTP/1.1. gRPC needs HTTP/2; without TLS that is
	// h2c with prior knowledge, which net/http serves natively since Go 1.24
	// (Protocols.SetUnencryptedHTTP2), so neither golang.org/x/net/http2/h2c
	// nor a connection sniffer (cmux) is needed. The cost is that gRPC goes
	// through grpc.Server.ServeHTTP, slower than grpc's own transport, which
	// does not matter for a handful of admin calls.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if s.tls != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	errorLog, err := zap.NewStdLogAt(logger.Named("http"), zapcore.WarnLevel)
	if err != nil {
		return nil, fmt.Errorf("admin: http error log: %w", err)
	}
	s.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				s.grpc.ServeHTTP(w, r)
				return
			}
			rest.ServeHTTP(w, r)
		}),
		Protocols: &protocols,
		TLSConfig: s.tls,
		// No ReadTimeout or WriteTimeout: a Switch is answered only once it
		// is applied, after a drain bounded by the proxy, and a gRPC health
		// Watch stays open. Headers, though, must arrive promptly.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}
	// The health listener: HTTP/1.1, the three read-only paths, nothing
	// else (404, or 405 for another method).
	s.probes = &http.Server{
		// Why the proxy is not ready (an upstream's error, with broker
		// addresses) is for the admin API; the health port, exposed to
		// the pod network for probes and Prometheus, only says that.
		Handler:           http.MaxBytesHandler(probeMux(p, gatherer, logger, false), 1<<10),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}
	return s, nil
}

// probeMux serves GET /healthz (liveness), /readyz (p.Ready) and /metrics
// (gatherer), and nothing else. /readyz names the reason when detail is
// set.
func probeMux(p Proxy, gatherer prometheus.Gatherer, logger *zap.Logger, detail bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(logger.Named("metrics")),
		// Serve what could be gathered; a broken collector should not blank
		// every dashboard of this sidecar.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.Ready(); err != nil {
			if !detail {
				writeText(w, http.StatusServiceUnavailable, "not ready (the admin API's /readyz and /v1/status say why)")
				return
			}
			writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	return mux
}

// Run listens on cfg.Listen and, when set, cfg.HealthListen, and serves
// them as Serve and ServeHealth do, until ctx is cancelled or either fails
// (then it stops the other and returns the error).
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", s.cfg.Listen, err)
	}
	if s.cfg.HealthListen == "" {
		return s.Serve(ctx, ln)
	}
	hln, err := lc.Listen(ctx, "tcp", s.cfg.HealthListen)
	if err != nil {
		_ = ln.Close() // not served yet; the listen error is the one to report
		return fmt.Errorf("admin: listen %s (health): %w", s.cfg.HealthListen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Serve(gctx, ln) })
	g.Go(func() error { return s.ServeHealth(gctx, hln) })
	return g.Wait()
}

// Serve serves the admin API, gRPC and HTTP, on ln (TLS only when cfg.TLS
// has a certificate). It blocks until ctx is cancelled, then shuts down
// gracefully: it stops accepting, reports NOT_SERVING to gRPC health, and
// waits up to cfg.ShutdownTimeout for in-flight calls before closing the
// remaining connections. Serve takes ownership of ln and closes it. It
// returns nil after a clean shutdown, an error if the shutdown timed out or
// if serving failed on its own (then without waiting for ctx). Serve may be
// called once per Server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		_ = ln.Close() // we own ln either way; nothing more to report
		return errors.New("admin: Serve called twice")
	}
	s.started = true
	s.addr = ln.Addr()
	s.mu.Unlock()

	s.logger.Info("admin: serving", zap.Stringer("addr", ln.Addr()), zap.Bool("tls", s.tls != nil),
		zap.Bool("token", s.cfg.Token != ""), zap.Bool("client_certificates", s.cfg.TLS.CAFile != ""))
	errc := make(chan error, 1)
	if s.tls != nil {
		// ServeTLS adds the ALPN protocols (h2, http/1.1) to a clone of
		// TLSConfig; the certificate comes from its GetCertificate.
		go func() { errc <- s.http.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- s.http.Serve(ln) }()
	}

	select {
	case err := <-errc:
		// Accept failed: nothing new can arrive, so cut off what is open.
		_ = s.http.Close() // its error would only repeat err
		s.grpc.Stop()
		return fmt.Errorf("admin: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	err := s.shutdown()
	<-errc // http.Server.Serve returns as soon as shutdown closes ln
	return err
}

// ServeHealth serves GET /healthz, /readyz and /metrics on ln, over plain
// HTTP/1.1 and without credentials, until ctx is cancelled; then it closes
// ln and its connections (those requests are short and repeated by their
// callers) and returns nil. It returns an error, without waiting for ctx,
// if serving fails. ServeHealth takes ownership of ln and may be called
// once per Server.
func (s *Server) ServeHealth(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.healthStarted {
		s.mu.Unlock()
		_ = ln.Close()
		return errors.New("admin: ServeHealth called twice")
	}
	s.healthStarted = true
	s.healthAddr = ln.Addr()
	s.mu.Unlock()

	s.logger.Info("admin: serving health and metrics", zap.Stringer("addr", ln.Addr()))
	errc := make(chan error, 1)
	go func() { errc <- s.probes.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve health %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	_ = s.probes.Close() // closes ln and every connection; nothing to drain
	<-errc
	return nil
}

// shutdown drains HTTP first and stops gRPC last. The order matters because
// gRPC requests arrive through http.Server (ServeHTTP): grpc.Server's own
// GracefulStop would cancel those streams rather than wait for them, while
// http.Server.Shutdown sends HTTP/2 GOAWAY and waits for active requests,
// gRPC ones included.
func (s *Server) shutdown() error {
	s.health.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var err error
	if serr := s.http.Shutdown(ctx); serr != nil {
		// Some call outlived the budget (a long Switch, a health Watch
		// stream): cut it off so the process can exit.
		err = fmt.Errorf("admin: graceful shutdown after %v: %w", s.cfg.ShutdownTimeout, serr)
		if cerr := s.http.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("admin: close: %w", cerr))
		}
	}
	s.grpc.Stop()
	return err
}

// Addr returns the address Serve listens on, or nil before Serve is called.
// With a ":0" listen address it tells the port the system chose.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// HealthAddr returns the address ServeHealth listens on, or nil before
// ServeHealth is called.
func (s *Server) HealthAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthAddr
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n")) // a failed write means the client left
}
