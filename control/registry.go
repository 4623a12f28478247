package control

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// A rule puts the sidecars a selector matches into a state: a cluster and
// an optional gate. Each cutover owns one rule and moves it through its
// steps; when several rules match a sidecar, the newest wins. A sidecar no
// rule matches is left on the cluster it runs on.
type rule struct {
	ID      string            `json:"id"`
	Seq     uint64            `json:"seq"` // creation order
	Apps    []string          `json:"apps"`
	Labels  map[string]string `json:"labels,omitempty"`
	Active  string            `json:"active"`
	Gate    *gateSpec         `json:"gate,omitempty"`
	Version uint64            `json:"version"`
}

type gateSpec struct {
	APIKeys []int32 `json:"apiKeys"`
	Mode    string  `json:"mode"`
	// HoldBudget (HOLD): how long a sidecar parks a request; 0 leaves the
	// sidecar's own holdBudget.
	HoldBudget time.Duration `json:"holdBudget,omitempty"`
}

func (g *gateSpec) toProto() *switchyardv1.Gate {
	pg := &switchyardv1.Gate{ApiKeys: slices.Clone(g.APIKeys), Mode: g.Mode}
	if g.HoldBudget > 0 {
		pg.HoldBudget = durationpb.New(g.HoldBudget)
	}
	return pg
}

func (r *rule) matches(id *switchyardv1.SidecarIdentity) bool {
	if !slices.Contains(r.Apps, id.GetApp()) {
		return false
	}
	for k, v := range r.Labels {
		if id.GetLabels()[k] != v {
			return false
		}
	}
	return true
}

// registryState is what the registry persists.
type registryState struct {
	// Counter is the last version handed out. Versions only grow, over
	// every rule, so a sidecar whose newest matching rule changes still
	// sees its version rise.
	Counter uint64 `json:"counter"`
	Rules   []rule `json:"rules"`
}

// sidecar is one sidecar as the registry knows it.
type sidecar struct {
	id        *switchyardv1.SidecarIdentity
	gen       uint64 // which stream is current
	connected bool
	applied   uint64
	applyErr  string
	status    *switchyardv1.ProxyStatus
	clusters  []string
	lastSeen  time.Time
	statusAt  uint64        // the applied version reported with the status
	goneAt    time.Time     // when its stream ended (zero while connected)
	notify    chan struct{} // the desired state may have changed
}

func sidecarKey(id *switchyardv1.SidecarIdentity) string { return id.GetApp() + "/" + id.GetInstance() }

// Registry is the sidecar registry and the desired state of every sidecar.
// It serves SidecarService.Connect.
type Registry struct {
	switchyardv1.UnimplementedSidecarServiceServer

	store *Store
	log   *zap.Logger
	auth  func(ctxMetadata) error

	// forgetAfter is how long a disconnected sidecar stays listed: a pod
	// replaced in a rollout never comes back under its old instance name.
	forgetAfter time.Duration

	// stopping is closed when the server shuts down: open streams end
	// then, instead of holding the graceful stop to its timeout.
	stopping     chan struct{}
	stoppingOnce sync.Once

	mu       sync.Mutex
	state    registryState
	sidecars map[string]*sidecar
	gen      uint64
	changed  chan struct{} // closed and replaced on every change
}

// NewRegistry loads the registry's persisted rules from store.
func NewRegistry(store *Store, log *zap.Logger) (*Registry, error) {
	r := &Registry{store: store, log: log, sidecars: map[string]*sidecar{}, changed: make(chan struct{}), forgetAfter: 10 * time.Minute,
		stopping: make(chan struct{})}
	if _, err := store.Get("registry", "state", &r.state); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return r, nil
}

// broadcastLocked wakes everyone waiting for a change.
func (r *Registry) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of any sidecar or
// rule.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// desiredLocked computes a sidecar's desired state: the newest matching
// rule's, or — when none matches — an empty one at version 0.
func (r *Registry) desiredLocked(sc *sidecar) *switchyardv1.DesiredState {
	var best *rule
	for i := range r.state.Rules {
		ru := &r.state.Rules[i]
		if ru.matches(sc.id) && (best == nil || ru.Seq > best.Seq) {
			best = ru
		}
	}
	if best == nil {
		// Version 0 with no content: "nothing for you", the sidecar keeps
		// its own configuration (and counts as ready).
		return &switchyardv1.DesiredState{}
	}
	d := &switchyardv1.DesiredState{Version: best.Version, ActiveCluster: best.Active}
	if best.Gate != nil {
		d.Gate = best.Gate.toProto()
	}
	return d
}

// SetRule creates or updates the rule with the given id, persists it, and
// pushes the new desired state to every sidecar it matches. It returns the
// rule's new version: a sidecar that applied it acknowledges at least that.
func (r *Registry) SetRule(id string, sel *switchyardv1.SidecarSelector, active string, gate *gateSpec) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.state
	next.Rules = slices.Clone(r.state.Rules)
	next.Counter++
	i := slices.IndexFunc(next.Rules, func(ru rule) bool { return ru.ID == id })
	if i < 0 {
		next.Rules = append(next.Rules, rule{ID: id, Seq: next.Counter})
		i = len(next.Rules) - 1
	}
	ru := &next.Rules[i]
	ru.Apps, ru.Labels = slices.Clone(sel.GetApps()), maps.Clone(sel.GetLabels())
	ru.Active, ru.Gate, ru.Version = active, gate, next.Counter
	// Stored before any sidecar hears of it.
	if err := r.store.Put("registry", "state", next); err != nil {
		return 0, err
	}
	r.state = next
	for _, sc := range r.sidecars {
		if ru.matches(sc.id) {
			select {
			case sc.notify <- struct{}{}:
			default:
			}
		}
	}
	r.broadcastLocked()
	return ru.Version, nil
}

// HasRule reports whether the registry holds a rule with the given id:
// whether sidecars may have been told anything on its behalf.
func (r *Registry) HasRule(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.state.Rules, func(ru rule) bool { return ru.ID == id })
}

// Select returns the keys of the connected sidecars a selector matches.
func (r *Registry) Select(sel *switchyardv1.SidecarSelector) []string {
	ru := rule{Apps: sel.GetApps(), Labels: sel.GetLabels()}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k, sc := range r.sidecars {
		if sc.connected && ru.matches(sc.id) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Acks returns the acknowledgement state of the given sidecars for a
// version, and whether every one of them is connected and has applied it
// without error.
func (r *Registry) Acks(keys []string, want uint64) ([]*switchyardv1.SidecarAck, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := true
	out := make([]*switchyardv1.SidecarAck, 0, len(keys))
	for _, k := range keys {
		sc := r.sidecars[k]
		a := &switchyardv1.SidecarAck{WantVersion: want}
		if sc == nil {
			app, inst, _ := cutKey(k)
			a.App, a.Instance = app, inst
			all = false
		} else {
			a.App, a.Instance, a.Connected, a.AppliedVersion, a.ApplyError = sc.id.GetApp(), sc.id.GetInstance(), sc.connected, sc.applied, sc.applyErr
			if !sc.connected || sc.applied < want || sc.applyErr != "" {
				all = false
			}
		}
		out = append(out, a)
	}
	return out, all
}

// pruneLocked forgets sidecars disconnected for longer than forgetAfter.
func (r *Registry) pruneLocked() {
	for k, sc := range r.sidecars {
		if !sc.connected && !sc.goneAt.IsZero() && time.Since(sc.goneAt) > r.forgetAfter {
			delete(r.sidecars, k)
		}
	}
}

// StatusApplied returns the last reported status of a sidecar, the
// desired-state version it had applied when it reported it, and whether it
// is connected.
func (r *Registry) StatusApplied(key string) (*switchyardv1.ProxyStatus, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sc := r.sidecars[key]
	if sc == nil {
		return nil, 0, false
	}
	return sc.status, sc.statusAt, sc.connected
}

// List returns every sidecar known, optionally of one application.
// Sidecars disconnected for longer than forgetAfter are forgotten.
func (r *Registry) List(app string) []*switchyardv1.Sidecar {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	var out []*switchyardv1.Sidecar
	for _, sc := range r.sidecars {
		if app != "" && sc.id.GetApp() != app {
			continue
		}
		out = append(out, &switchyardv1.Sidecar{
			Identity: sc.id, Connected: sc.connected, Desired: r.desiredLocked(sc), AppliedVersion: sc.applied,
			ApplyError: sc.applyErr, Status: sc.status, LastSeen: timestamppb.New(sc.lastSeen),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		return sidecarKey(out[i].Identity) < sidecarKey(out[j].Identity)
	})
	return out
}

func cutKey(k string) (string, string, bool) {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// Connect serves one sidecar's stream.
func (r *Registry) Connect(stream switchyardv1.SidecarService_ConnectServer) error {
	ctx := stream.Context()
	if r.auth != nil {
		if err := r.auth(incoming(ctx)); err != nil {
			return err
		}
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetIdentity()
	if id.GetApp() == "" || id.GetInstance() == "" {
		return status.Error(codes.InvalidArgument, "the first message must carry the sidecar's identity: app and instance")
	}
	sc, gen := r.attach(id, first)
	r.log.Info("sidecar connected", zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()),
		zap.Uint64("applied", first.GetAppliedVersion()))
	defer r.detach(sc, gen)

	// The receiver is owned by this handler: when the handler returns, gRPC
	// ends the stream and Recv returns.
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			r.report(sc, gen, m)
		}
	}()
	var sent *switchyardv1.DesiredState
	for {
		r.mu.Lock()
		d := r.desiredLocked(sc)
		r.mu.Unlock()
		if d != nil && (sent == nil || !proto.Equal(d, sent)) {
			if err := stream.Send(&switchyardv1.ConnectResponse{Desired: d}); err != nil {
				return err
			}
			sent = d
		}
		select {
		case <-sc.notify:
		case err := <-errc:
			if errors.Is(err, ctx.Err()) || status.Code(err) == codes.Canceled {
				return nil
			}
			return nil // the sidecar went away; it reconnects
		case <-ctx.Done():
			return nil
		case <-r.stopping:
			// The sidecar reconnects (to this control plane once it is
			// back, or another).
			return status.Error(codes.Unavailable, "the control plane is shutting down")
		}
	}
}

// stop ends every open stream (server shutdown).
func (r *Registry) stop() { r.stoppingOnce.Do(func() { close(r.stopping) }) }

func (r *Registry) attach(id *switchyardv1.SidecarIdentity, first *switchyardv1.ConnectRequest) (*sidecar, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	k := sidecarKey(id)
	sc := r.sidecars[k]
	if sc == nil {
		sc = &sidecar{notify: make(chan struct{}, 1)}
		r.sidecars[k] = sc
	}
	// A new stream of the same instance replaces the old one.
	sc.id, sc.gen, sc.connected, sc.goneAt = proto.Clone(id).(*switchyardv1.SidecarIdentity), r.gen, true, time.Time{}
	r.applyReportLocked(sc, first)
	if first.GetAppliedVersion() > r.state.Counter {
		// The sidecar applied a version this registry never handed out (its
		// store was lost or replaced). A sidecar refuses versions below the
		// one it applied, so every rule is issued again above it, and its
		// application, if no rule covers it, is adopted as it runs now.
		r.reissueLocked(first.GetAppliedVersion(), sc)
	}
	r.broadcastLocked()
	return sc, r.gen
}

func (r *Registry) detach(sc *sidecar, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sc.gen != gen {
		return // replaced by a newer stream
	}
	sc.connected = false
	sc.goneAt = time.Now()
	r.broadcastLocked()
	r.log.Info("sidecar disconnected", zap.String("app", sc.id.GetApp()), zap.String("instance", sc.id.GetInstance()))
}

func (r *Registry) report(sc *sidecar, gen uint64, m *switchyardv1.ConnectRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sc.gen != gen {
		return
	}
	r.applyReportLocked(sc, m)
	r.broadcastLocked()
}

func (r *Registry) applyReportLocked(sc *sidecar, m *switchyardv1.ConnectRequest) {
	now := time.Now()
	sc.applied, sc.applyErr, sc.lastSeen = m.GetAppliedVersion(), m.GetApplyError(), now
	if m.GetStatus() != nil {
		sc.status, sc.statusAt = m.GetStatus(), m.GetAppliedVersion()
	}
	if len(m.GetClusters()) > 0 {
		sc.clusters = slices.Clone(m.GetClusters())
	}
}

// counts returns the number of sidecars per application and state:
// connected (acknowledged its desired state), unacknowledged, disconnected.
func (r *Registry) counts() map[[2]string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	out := map[[2]string]int{}
	for _, sc := range r.sidecars {
		state := "connected"
		switch {
		case !sc.connected:
			state = "disconnected"
		case sc.applyErr != "":
			state = "unacknowledged"
		default:
			if d := r.desiredLocked(sc); d != nil && sc.applied < d.GetVersion() {
				state = "unacknowledged"
			}
		}
		out[[2]string{sc.id.GetApp(), state}]++
	}
	return out
}

// reissueLocked raises the version counter above floor and gives every rule
// a new version, so sidecars that applied versions up to floor accept them.
func (r *Registry) reissueLocked(floor uint64, sc *sidecar) {
	next := r.state
	next.Rules = slices.Clone(r.state.Rules)
	next.Counter = floor
	for i := range next.Rules {
		next.Counter++
		next.Rules[i].Version = next.Counter
	}
	if !slices.ContainsFunc(next.Rules, func(ru rule) bool { return ru.matches(sc.id) }) && sc.status != nil {
		next.Counter++
		ru := rule{ID: "adopted-" + sc.id.GetApp(), Seq: next.Counter, Apps: []string{sc.id.GetApp()},
			Active: sc.status.GetActiveCluster(), Version: next.Counter}
		if g := sc.status.GetGate(); g != nil {
			ru.Gate = &gateSpec{APIKeys: slices.Clone(g.GetApiKeys()), Mode: g.GetMode(), HoldBudget: g.GetHoldBudget().AsDuration()}
		}
		next.Rules = append(next.Rules, ru)
	}
	if err := r.store.Put("registry", "state", next); err != nil {
		r.log.Error("re-issue desired state versions", zap.Error(err))
		return
	}
	r.log.Warn("a sidecar applied a version above this registry's: re-issued every rule above it", zap.Uint64("floor", floor))
	r.state = next
	for _, sc := range r.sidecars {
		select {
		case sc.notify <- struct{}{}:
		default:
		}
	}
}
