package control

import (
	"context"
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/mirror"
)

// PlaneConfig configures a whole control plane.
type PlaneConfig struct {
	// Server: listen address, TLS, tokens, client certificates and their
	// roles, read authentication, audit file. NewPlane validates it before
	// it listens.
	Server ServerConfig
	// StoreDir holds the store.
	StoreDir string
	// Clusters the control plane knows.
	Clusters []*switchyardv1.Cluster
	// Mirrors to run; their bootstrap addresses come from Clusters.
	Mirrors []PlaneMirror
}

// PlaneMirror is a mirror between two of the plane's clusters.
type PlaneMirror struct {
	Source, Target string
	Config         mirror.Config
}

// Plane is a running control plane: store, registry, mirrors, cutovers and
// the API server, on one listener.
type Plane struct {
	Registry   *Registry
	Controller *Controller
	server     *Server
	mirrors    map[string]*mirror.Mirror
	ln         net.Listener
}

// NewPlane builds a control plane and listens; Run serves. Metrics go to
// reg.
func NewPlane(ctx context.Context, cfg PlaneConfig, reg *prometheus.Registry, log *zap.Logger) (*Plane, error) {
	if log == nil {
		log = zap.NewNop()
	}
	store, err := OpenStore(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	registry, err := NewRegistry(store, log.Named("registry"))
	if err != nil {
		return nil, err
	}
	byName := map[string]*switchyardv1.Cluster{}
	for _, c := range cfg.Clusters {
		byName[c.GetName()] = c
	}
	p := &Plane{Registry: registry, mirrors: map[string]*mirror.Mirror{}}
	var refs []*MirrorRef
	for _, m := range cfg.Mirrors {
		src, dst := byName[m.Source], byName[m.Target]
		if src == nil || dst == nil {
			return nil, fmt.Errorf("mirror %s: source %q and target %q must be configured clusters", m.Config.Name, m.Source, m.Target)
		}
		mc := m.Config
		mc.SourceBootstrap, mc.TargetBootstrap = src.GetBootstrap(), dst.GetBootstrap()
		engine, err := mirror.New(mc, log.Named("mirror"), reg)
		if err != nil {
			return nil, err
		}
		p.mirrors[mc.Name] = engine
		refs = append(refs, &MirrorRef{Name: mc.Name, Source: m.Source, Target: m.Target, Mirror: engine})
	}
	p.Controller = NewController(registry, store, cfg.Clusters, refs, log.Named("cutover"))
	if err := p.Controller.Instrument(reg); err != nil {
		return nil, err
	}
	if p.server, err = NewServer(cfg.Server, p.Controller, registry, cfg.Clusters, refs, reg, log); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if p.ln, err = lc.Listen(ctx, "tcp", cfg.Server.Listen); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Server.Listen, err)
	}
	return p, nil
}

// Addr is the address the plane serves on.
func (p *Plane) Addr() net.Addr { return p.ln.Addr() }

// Mirror returns a mirror the plane runs.
func (p *Plane) Mirror(name string) *mirror.Mirror { return p.mirrors[name] }

// Run runs the mirrors, resumes stored cutovers and serves until ctx ends.
func (p *Plane) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, m := range p.mirrors {
		g.Go(func() error { return m.Run(gctx) })
	}
	if err := p.Controller.Start(gctx); err != nil {
		_ = p.ln.Close()
		return fmt.Errorf("resume cutovers: %w", err)
	}
	g.Go(func() error {
		<-gctx.Done()
		p.Controller.Wait()
		return nil
	})
	g.Go(func() error { return p.server.Serve(gctx, p.ln) })
	return g.Wait()
}
