package control

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
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/apiguard"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/mirror"
)

// service implements ControlService.
type service struct {
	switchyardv1.UnimplementedControlServiceServer
	stopping <-chan struct{} // closed at shutdown: watches end
	ct       *Controller
	reg      *Registry
	mirrors  []*MirrorRef
	clusters []*switchyardv1.Cluster
	auth     *authorizer
	audit    *auditLog
	log      *zap.Logger
}

// allow checks that the caller may call method; refusals are logged
// (without the credential) and returned as gRPC status errors.
func (s *service) allow(ctx context.Context, method string, perm permission) (principal, error) {
	who, err := s.auth.authorize(ctx, method, perm)
	if err != nil {
		s.log.Info("control: call refused", zap.String("method", method), zap.Stringer("who", who),
			zap.String("code", status.Code(err).String()), zap.String("reason", status.Convert(err).Message()))
	}
	return who, err
}

func (s *service) read(ctx context.Context, method string) error {
	_, err := s.allow(ctx, method, permRead)
	return err
}

// mutate runs a mutating call for an operator and writes it to the audit
// log, refused or not. call returns the id of the cutover it concerns, if
// any, for the audit log.
func (s *service) mutate(ctx context.Context, method string, summary any, call func() (string, error)) error {
	who, err := s.allow(ctx, method, permOperate)
	var id string
	if err == nil {
		id, err = call()
	}
	s.audit.record(ctx, who, method, summary, id, err)
	return err
}

// mutateCutover is mutate for a call that returns a cutover.
func (s *service) mutateCutover(ctx context.Context, method string, summary any, call func() (*switchyardv1.Cutover, error)) (*switchyardv1.Cutover, error) {
	var c *switchyardv1.Cutover
	err := s.mutate(ctx, method, summary, func() (string, error) {
		var err error
		c, err = call()
		return c.GetId(), err
	})
	return c, err
}

// sidecarService is the registry's SidecarService behind the authorizer:
// only the sidecar and operator roles may connect, and a sidecar
// credential only as the applications (and instance) it names.
type sidecarService struct {
	switchyardv1.UnimplementedSidecarServiceServer
	reg     *Registry
	svc     *service
	streams *streamCounter
	// operators: what an operator credential on Connect gets, on a
	// listener that is not loopback (see ServerConfig.AllowOperatorSidecars).
	operators operatorSidecars
}

type operatorSidecars int

const (
	operatorSidecarsAllowed operatorSidecars = iota // loopback: a developer's machine
	operatorSidecarsWarned                          // allowOperatorSidecars
	operatorSidecarsRefused
)

// Connect checks the caller — an operator credential is refused off
// loopback unless AllowOperatorSidecars — and that its credential has
// fewer than Limits.SidecarsPerCredential streams open (ResourceExhausted,
// before anything is read), then serves the stream (see Registry.serve).
func (s sidecarService) Connect(stream switchyardv1.SidecarService_ConnectServer) error {
	who, err := s.svc.allow(stream.Context(), "Connect", permConnect)
	if err != nil {
		return err
	}
	if who.role == RoleOperator {
		switch s.operators {
		case operatorSidecarsRefused:
			err := status.Errorf(codes.PermissionDenied,
				"Connect: %s has role operator, which sidecars may not use: a sidecar's credential is stored in its application's "+
					"namespace and in every sidecar, and an operator's may move every application; give sidecars a token of role "+
					"sidecar (tokens: role: sidecar, apps: [...]), or set allowOperatorSidecars while you move them", who)
			s.svc.log.Error("control: sidecar stream refused: an operator credential", zap.Stringer("who", who), zap.Error(err))
			return err
		case operatorSidecarsWarned:
			s.svc.log.Warn("control: a sidecar connects with an operator credential (allowOperatorSidecars): whoever can read "+
				"that sidecar's Secret may start, abort and declare cutovers of every application; give sidecars sidecar tokens",
				zap.Stringer("who", who))
		}
	}
	if err := s.streams.open(who); err != nil {
		s.svc.log.Warn("sidecar stream refused", zap.Stringer("who", who), zap.Error(err))
		return err
	}
	release := sync.OnceFunc(func() { s.streams.close(who) })
	defer release()
	return s.reg.serve(stream, who, s.streams.max, release)
}

// streamCounter counts the open sidecar streams of each credential. It is
// safe for concurrent use.
type streamCounter struct {
	max    int
	mu     sync.Mutex
	byCred map[string]int
}

func (c *streamCounter) open(who principal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := who.credential()
	if c.byCred[k] >= c.max {
		return status.Errorf(codes.ResourceExhausted,
			"%s has %d sidecar streams open, the most one credential may (limits.sidecarsPerCredential): give each namespace or team a token of its own, or raise the limit",
			who, c.byCred[k])
	}
	c.byCred[k]++
	return nil
}

func (c *streamCounter) close(who principal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := who.credential()
	if c.byCred[k]--; c.byCred[k] <= 0 {
		delete(c.byCred, k)
	}
}

func (s *service) ListClusters(ctx context.Context, _ *switchyardv1.ListClustersRequest) (*switchyardv1.ListClustersResponse, error) {
	if err := s.read(ctx, "ListClusters"); err != nil {
		return nil, err
	}
	return &switchyardv1.ListClustersResponse{Clusters: s.clusters}, nil
}

func (s *service) ListSidecars(ctx context.Context, req *switchyardv1.ListSidecarsRequest) (*switchyardv1.ListSidecarsResponse, error) {
	if err := s.read(ctx, "ListSidecars"); err != nil {
		return nil, err
	}
	return &switchyardv1.ListSidecarsResponse{Sidecars: s.reg.List(req.GetApp())}, nil
}

func (s *service) ListMirrors(ctx context.Context, _ *switchyardv1.ListMirrorsRequest) (*switchyardv1.ListMirrorsResponse, error) {
	if err := s.read(ctx, "ListMirrors"); err != nil {
		return nil, err
	}
	out := &switchyardv1.ListMirrorsResponse{}
	for _, m := range s.mirrors {
		out.Mirrors = append(out.Mirrors, mirrorToProto(m))
	}
	return out, nil
}

func mirrorToProto(m *MirrorRef) *switchyardv1.Mirror {
	st := m.Mirror.Status()
	pm := &switchyardv1.Mirror{Name: m.Name, Source: m.Source, Target: m.Target, Ready: st.Ready,
		TopicErrors: st.TopicErrors, LastError: st.LastError}
	for _, p := range st.Partitions {
		pm.Partitions = append(pm.Partitions, &switchyardv1.MirrorPartition{Topic: p.Topic, Partition: p.Partition,
			Next: p.Next, HighWatermark: p.HighWatermark, LagRecords: p.LagRecords, LagSeconds: p.LagSeconds,
			Failing: p.Failing, LastError: p.LastError, LostOffsets: p.LostOffsets})
	}
	return pm
}

func (s *service) CreateCutover(ctx context.Context, req *switchyardv1.CreateCutoverRequest) (*switchyardv1.CreateCutoverResponse, error) {
	c, err := s.mutateCutover(ctx, "CreateCutover", req.GetSpec(), func() (*switchyardv1.Cutover, error) {
		return s.ct.Create(req.GetSpec())
	})
	if err != nil {
		return nil, err
	}
	return &switchyardv1.CreateCutoverResponse{Cutover: c}, nil
}

func (s *service) GetCutover(ctx context.Context, req *switchyardv1.GetCutoverRequest) (*switchyardv1.GetCutoverResponse, error) {
	if err := s.read(ctx, "GetCutover"); err != nil {
		return nil, err
	}
	c, ok := s.ct.Get(req.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no cutover %q", req.GetId())
	}
	return &switchyardv1.GetCutoverResponse{Cutover: c}, nil
}

func (s *service) ListCutovers(ctx context.Context, _ *switchyardv1.ListCutoversRequest) (*switchyardv1.ListCutoversResponse, error) {
	if err := s.read(ctx, "ListCutovers"); err != nil {
		return nil, err
	}
	return &switchyardv1.ListCutoversResponse{Cutovers: s.ct.List()}, nil
}

func (s *service) AbortCutover(ctx context.Context, req *switchyardv1.AbortCutoverRequest) (*switchyardv1.AbortCutoverResponse, error) {
	c, err := s.mutateCutover(ctx, "AbortCutover", req, func() (*switchyardv1.Cutover, error) {
		return s.ct.Abort(req.GetId(), req.GetReason())
	})
	if err != nil {
		return nil, err
	}
	return &switchyardv1.AbortCutoverResponse{Cutover: c}, nil
}

func (s *service) DeclareState(ctx context.Context, req *switchyardv1.DeclareStateRequest) (*switchyardv1.DeclareStateResponse, error) {
	var resp *switchyardv1.DeclareStateResponse
	err := s.mutate(ctx, "DeclareState", req, func() (string, error) {
		var err error
		resp, err = s.ct.Declare(req.GetSelector(), req.GetActiveCluster())
		return "", err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *service) WatchCutover(req *switchyardv1.WatchCutoverRequest, stream switchyardv1.ControlService_WatchCutoverServer) error {
	if err := s.read(stream.Context(), "WatchCutover"); err != nil {
		return err
	}
	return s.watch(stream.Context(), req.GetId(), func(c *switchyardv1.Cutover) error {
		return stream.Send(&switchyardv1.WatchCutoverResponse{Cutover: c})
	})
}

// watch calls send with the cutover now and after every change, until it
// ends or ctx does.
func (s *service) watch(ctx context.Context, id string, send func(*switchyardv1.Cutover) error) error {
	var last *switchyardv1.Cutover
	for {
		changed := s.ct.Changed()
		c, ok := s.ct.Get(id)
		if !ok {
			return status.Errorf(codes.NotFound, "no cutover %q", id)
		}
		if last == nil || !protoEqualIgnoringUpdated(last, c) {
			if err := send(c); err != nil {
				return err
			}
			last = c
		}
		if terminal(c.GetStep()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the control plane is shutting down")
		case <-changed:
		}
	}
}

func protoEqualIgnoringUpdated(a, b *switchyardv1.Cutover) bool {
	a2, b2 := proto.Clone(a).(*switchyardv1.Cutover), proto.Clone(b).(*switchyardv1.Cutover)
	a2.Updated, b2.Updated = nil, nil
	return proto.Equal(a2, b2)
}

// Server serves ControlService and SidecarService on one port: gRPC (h2c)
// and REST/JSON (grpc-gateway), the OpenAPI document, /metrics, /healthz.
type Server struct {
	reg   *Registry
	cfg   ServerConfig
	log   *zap.Logger
	grpc  *grpc.Server
	http  *http.Server
	audit *auditLog
	tls   *tls.Config // nil: plaintext (h2c)

	mu   sync.Mutex
	addr net.Addr
}

// NewServer builds the server. It validates cfg (see ServerConfig.Validate),
// loads the TLS files and opens the audit file; Serve closes it.
func NewServer(cfg ServerConfig, ct *Controller, reg *Registry, clusters []*switchyardv1.Cluster, mirrors []*MirrorRef,
	gatherer prometheus.Gatherer, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	cfg.Limits = cfg.Limits.orDefault()
	if cfg.keepaliveTime <= 0 {
		cfg.keepaliveTime, cfg.keepaliveTimeout = 10*time.Second, 5*time.Second
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if len(cfg.allTokens()) > 0 && cfg.TLS.CertFile == "" && !isLoopback(host) {
		log.Warn("control: bearer tokens accepted without TLS on a listener that is not loopback (allowPlaintextTokens): "+
			"safe only where something else encrypts the connection", zap.String("listen", cfg.Listen))
	}
	operators := operatorSidecarsAllowed
	switch {
	case isLoopback(host):
	case cfg.AllowOperatorSidecars:
		operators = operatorSidecarsWarned
		log.Warn("control: allowOperatorSidecars: sidecars may connect with an operator credential, so whoever reads a "+
			"sidecar's Secret may start, abort and declare cutovers of every application; give sidecars sidecar tokens "+
			"(tokens: role: sidecar, apps) and turn it off", zap.String("listen", cfg.Listen))
	default:
		operators = operatorSidecarsRefused
		if cfg.authEnabled() && !cfg.hasSidecarCredentials() {
			log.Warn("control: no credential has the sidecar role (tokens or clientCertificates with role: sidecar), and "+
				"operator credentials are refused to sidecars: no sidecar can connect; give sidecars sidecar tokens, or set "+
				"allowOperatorSidecars while you move them", zap.String("listen", cfg.Listen))
		}
	}
	s := &Server{cfg: cfg, log: log, reg: reg}
	if cfg.TLS.CertFile != "" {
		tlsCfg, err := tlsfiles.ServerConfig(cfg.TLS, cfg.TLS.CAFile != "" && !cfg.ClientCertOptional,
			tlsfiles.OnReloadError(func(err error) { log.Error("control: TLS files changed but do not load", zap.Error(err)) }))
		if err != nil {
			return nil, fmt.Errorf("control: tls: %w", err)
		}
		s.tls = tlsCfg
	}
	audit, err := openAudit(cfg.AuditFile, log.Named("audit"))
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	s.audit = audit
	svc := &service{ct: ct, reg: reg, mirrors: mirrors, clusters: clusters, auth: newAuthorizer(cfg), audit: audit,
		log: log, stopping: reg.stopping}
	browser := newBrowserGuard(cfg, log)
	unary, stream := apiguard.Interceptors(browser.checkCall)
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream),
		grpc.MaxRecvMsgSize(cfg.Limits.MessageBytes),
	)
	switchyardv1.RegisterControlServiceServer(s.grpc, svc)
	switchyardv1.RegisterSidecarServiceServer(s.grpc, sidecarService{reg: reg, svc: svc, operators: operators,
		streams: &streamCounter{max: cfg.Limits.SidecarsPerCredential, byCred: map[string]int{}}})

	gw := runtime.NewServeMux()
	if err := switchyardv1.RegisterControlServiceHandlerServer(context.Background(), gw, svc); err != nil {
		_ = audit.Close()
		return nil, fmt.Errorf("control: register gateway: %w", err)
	}
	openapi := switchyardv1.ControlOpenAPI()
	mux := http.NewServeMux()
	scrape := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		ct.refreshSidecarGauge()
		return gatherer.Gather()
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(scrape, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi)
	})
	// The in-process gateway cannot serve server streams: the watch is
	// served here, one JSON object per line, as grpc-gateway would.
	mux.HandleFunc("GET /v1/cutovers/{rest}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutSuffix(r.PathValue("rest"), ":watch")
		if !ok {
			gw.ServeHTTP(w, r)
			return
		}
		svc.serveWatch(w, r, id)
	})
	mux.Handle("/", gw)
	rest := browser.rest(withPeer(http.MaxBytesHandler(mux, 1<<20)))

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if s.tls != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	errorLog, err := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel)
	if err != nil {
		_ = audit.Close()
		return nil, err
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
		// gRPC is served through net/http (grpc.Server.ServeHTTP), so
		// HTTP/2 settings and keepalive are net/http's: grpc.NewServer's
		// MaxConcurrentStreams would count the streams of one request, and
		// its KeepaliveParams are not applied at all. A connection silent
		// for keepaliveTime is pinged; one that does not answer within
		// keepaliveTimeout is closed, so a sidecar that vanished without
		// closing its stream (a killed node) is noticed within ~15 s, no
		// longer counted as connected, and let back in (see attach).
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: cfg.Limits.StreamsPerConnection,
			SendPingTimeout: cfg.keepaliveTime, PingTimeout: cfg.keepaliveTimeout},
		TLSConfig:         s.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errorLog,
	}
	return s, nil
}

// serveWatch streams a cutover as newline-delimited JSON objects
// {"result": <WatchCutoverResponse>}, the shape grpc-gateway gives server
// streams.
func (s *service) serveWatch(w http.ResponseWriter, r *http.Request, id string) {
	md := ctxMetadata{}
	if a := r.Header.Get("Authorization"); a != "" {
		md.Set("authorization", a)
	}
	if err := s.read(metadata.NewIncomingContext(r.Context(), md), "WatchCutover"); err != nil {
		code := http.StatusUnauthorized
		if status.Code(err) == codes.PermissionDenied {
			code = http.StatusForbidden
		}
		http.Error(w, status.Convert(err).Message(), code)
		return
	}
	if _, ok := s.ct.Get(id); !ok {
		http.Error(w, fmt.Sprintf("no cutover %q", id), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	err := s.watch(r.Context(), id, func(c *switchyardv1.Cutover) error {
		b, err := protojson.Marshal(&switchyardv1.WatchCutoverResponse{Cutover: c})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "{\"result\":%s}\n", b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(w, "{\"error\":%q}\n", err.Error())
	}
}

// Serve serves on ln until ctx ends, then stops gracefully. While it
// serves, the registry forgets sidecars gone for longer than it keeps them
// (Registry.forgetLoop, which Serve owns and waits for).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	s.log.Info("control plane: serving", zap.Stringer("addr", ln.Addr()))
	defer func() {
		if err := s.audit.Close(); err != nil {
			s.log.Error("control: close the audit file", zap.Error(err))
		}
	}()
	var forgetting sync.WaitGroup
	defer forgetting.Wait()
	fctx, stopForgetting := context.WithCancel(ctx)
	defer stopForgetting()
	forgetting.Go(func() { s.reg.forgetLoop(fctx) })
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
		s.grpc.Stop()
		return fmt.Errorf("control: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Streams (sidecars, watches) end first, so the graceful stop waits
	// only for unary calls.
	s.reg.stop()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var err error
	if serr := s.http.Shutdown(sctx); serr != nil {
		// Watch and sidecar streams stay open: cut them off.
		_ = s.http.Close()
	}
	s.grpc.Stop()
	<-errc
	return err
}

// withPeer puts the caller's address and TLS state on the request's
// context as a gRPC peer, the way gRPC does for its own calls, so the
// in-process REST gateway's calls are authenticated like gRPC ones.
func withPeer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := &peer.Peer{Addr: remoteAddr(r.RemoteAddr)}
		if r.TLS != nil {
			p.AuthInfo = credentials.TLSInfo{State: *r.TLS,
				CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
		}
		h.ServeHTTP(w, r.WithContext(peer.NewContext(r.Context(), p)))
	})
}

// remoteAddr is an http.Request's RemoteAddr as a net.Addr.
type remoteAddr string

func (remoteAddr) Network() string  { return "tcp" }
func (a remoteAddr) String() string { return string(a) }

// Addr is the address Serve listens on.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// compile-time check: *mirror.Mirror is what a cutover needs.
var _ Mirror = (*mirror.Mirror)(nil)
