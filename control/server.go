package control

import (
	"context"
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
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
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
	auth     authorizer
	readAuth bool
}

func (s *service) read(ctx context.Context) error {
	if !s.readAuth {
		return nil
	}
	return s.auth.check(incoming(ctx))
}

func (s *service) ListClusters(ctx context.Context, _ *switchyardv1.ListClustersRequest) (*switchyardv1.ListClustersResponse, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	return &switchyardv1.ListClustersResponse{Clusters: s.clusters}, nil
}

func (s *service) ListSidecars(ctx context.Context, req *switchyardv1.ListSidecarsRequest) (*switchyardv1.ListSidecarsResponse, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	return &switchyardv1.ListSidecarsResponse{Sidecars: s.reg.List(req.GetApp())}, nil
}

func (s *service) ListMirrors(ctx context.Context, _ *switchyardv1.ListMirrorsRequest) (*switchyardv1.ListMirrorsResponse, error) {
	if err := s.read(ctx); err != nil {
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
			Failing: p.Failing, LastError: p.LastError})
	}
	return pm
}

func (s *service) CreateCutover(ctx context.Context, req *switchyardv1.CreateCutoverRequest) (*switchyardv1.CreateCutoverResponse, error) {
	if err := s.auth.check(incoming(ctx)); err != nil {
		return nil, err
	}
	c, err := s.ct.Create(req.GetSpec())
	if err != nil {
		return nil, err
	}
	return &switchyardv1.CreateCutoverResponse{Cutover: c}, nil
}

func (s *service) GetCutover(ctx context.Context, req *switchyardv1.GetCutoverRequest) (*switchyardv1.GetCutoverResponse, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	c, ok := s.ct.Get(req.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no cutover %q", req.GetId())
	}
	return &switchyardv1.GetCutoverResponse{Cutover: c}, nil
}

func (s *service) ListCutovers(ctx context.Context, _ *switchyardv1.ListCutoversRequest) (*switchyardv1.ListCutoversResponse, error) {
	if err := s.read(ctx); err != nil {
		return nil, err
	}
	return &switchyardv1.ListCutoversResponse{Cutovers: s.ct.List()}, nil
}

func (s *service) AbortCutover(ctx context.Context, req *switchyardv1.AbortCutoverRequest) (*switchyardv1.AbortCutoverResponse, error) {
	if err := s.auth.check(incoming(ctx)); err != nil {
		return nil, err
	}
	c, err := s.ct.Abort(req.GetId(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &switchyardv1.AbortCutoverResponse{Cutover: c}, nil
}

func (s *service) WatchCutover(req *switchyardv1.WatchCutoverRequest, stream switchyardv1.ControlService_WatchCutoverServer) error {
	if err := s.read(stream.Context()); err != nil {
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

// ServerConfig configures the API server.
type ServerConfig struct {
	// Listen is the host:port for gRPC and REST.
	Listen string
	// Token, when set, is required as "authorization: Bearer <token>" on
	// mutating calls and on sidecar streams; with ReadAuth on reads too.
	Token    string
	ReadAuth bool
	// ShutdownTimeout bounds the graceful stop.
	ShutdownTimeout time.Duration
}

// Server serves ControlService and SidecarService on one port: gRPC (h2c)
// and REST/JSON (grpc-gateway), the OpenAPI document, /metrics, /healthz.
type Server struct {
	reg  *Registry
	cfg  ServerConfig
	log  *zap.Logger
	grpc *grpc.Server
	http *http.Server

	mu   sync.Mutex
	addr net.Addr
}

// NewServer builds the server.
func NewServer(cfg ServerConfig, ct *Controller, reg *Registry, clusters []*switchyardv1.Cluster, mirrors []*MirrorRef,
	gatherer prometheus.Gatherer, log *zap.Logger) (*Server, error) {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	auth := authorizer{token: cfg.Token}
	reg.auth = auth.check
	svc := &service{ct: ct, reg: reg, mirrors: mirrors, clusters: clusters, auth: auth, readAuth: cfg.ReadAuth, stopping: reg.stopping}
	s := &Server{cfg: cfg, log: log, reg: reg}
	s.grpc = grpc.NewServer(
		// A sidecar that vanished without closing its stream (a killed
		// node) is noticed within ~15 s and no longer counted as connected.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	switchyardv1.RegisterControlServiceServer(s.grpc, svc)
	switchyardv1.RegisterSidecarServiceServer(s.grpc, reg)

	gw := runtime.NewServeMux()
	if err := switchyardv1.RegisterControlServiceHandlerServer(context.Background(), gw, svc); err != nil {
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
	rest := http.MaxBytesHandler(mux, 1<<20)

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	errorLog, err := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel)
	if err != nil {
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
		Protocols:         &protocols,
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
	if s.readAuth {
		if err := s.auth.check(md); err != nil {
			http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
			return
		}
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

// Serve serves on ln until ctx ends, then stops gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	s.log.Info("control plane: serving", zap.Stringer("addr", ln.Addr()))
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
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

// Addr is the address Serve listens on.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// compile-time check: *mirror.Mirror is what a cutover needs.
var _ Mirror = (*mirror.Mirror)(nil)
