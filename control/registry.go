package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/identity"
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
	// RejectKeys are refused whatever Mode is (Gate.reject_api_keys). A
	// sidecar that did not announce SIDECAR_FEATURE_GATE_REJECT_KEYS is
	// sent the gate it understands instead: see toProto.
	RejectKeys []int32 `json:"rejectApiKeys,omitempty"`
	// FetchWaitsForTransactions: see Gate.fetch_waits_for_transactions.
	FetchWaitsForTransactions bool `json:"fetchWaitsForTransactions,omitempty"`
}

// toProto is the gate as a sidecar with the given features is sent it. A
// sidecar that cannot refuse some keys while it holds others gets them all
// refused, with no budget — the gate of a sidecar before per-key modes:
// it refuses more than asked, never lets through what is to be refused.
func (g *gateSpec) toProto(features []switchyardv1.SidecarFeature) *switchyardv1.Gate {
	pg := &switchyardv1.Gate{ApiKeys: slices.Clone(g.APIKeys), Mode: g.Mode, FetchWaitsForTransactions: g.FetchWaitsForTransactions}
	if g.HoldBudget > 0 {
		pg.HoldBudget = durationpb.New(g.HoldBudget)
	}
	if len(g.RejectKeys) == 0 {
		return pg
	}
	if slices.Contains(features, switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_REJECT_KEYS) {
		pg.RejectApiKeys = slices.Clone(g.RejectKeys)
		return pg
	}
	keys := slices.Concat(g.APIKeys, g.RejectKeys)
	slices.Sort(keys)
	pg.ApiKeys, pg.Mode, pg.HoldBudget = slices.Compact(keys), "REJECT", nil
	return pg
}

// holds reports whether the gate parks (HOLD) requests of some key.
func (g *gateSpec) holds() bool {
	if g == nil || !strings.EqualFold(g.Mode, "HOLD") {
		return false
	}
	return slices.ContainsFunc(g.APIKeys, func(k int32) bool { return !slices.Contains(g.RejectKeys, k) })
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
	// sees its version rise. It never wraps: see MaxAppliedVersion.
	Counter uint64 `json:"counter"`
	Rules   []rule `json:"rules"`
}

// MaxAppliedVersion is the largest applied version a sidecar may report
// above the registry's counter. A sidecar refuses desired states below the
// version it applied, so the registry continues its counter above what a
// sidecar reports (a sidecar reporting a version this registry never
// issued follows a store that was lost or restored from a backup).
// Bounding that claim keeps the counter far from overflow: a registry
// hands out a few versions per cutover, and 2^48 leaves 2^64-2^48 of them.
// Versions the registry issued itself, up to its counter, are always
// accepted, even once the counter has passed the bound.
const MaxAppliedVersion = 1 << 48

// nextVersion is the version after v; it refuses to wrap.
func nextVersion(v uint64) (uint64, error) {
	if v == math.MaxUint64 {
		return 0, errors.New("the desired-state version counter is exhausted")
	}
	return v + 1, nil
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
	who       principal                     // the credential of its current (or last) stream
	statusAt  uint64                        // the applied version reported with the status
	goneAt    time.Time                     // when its stream ended (zero while connected)
	notify    chan struct{}                 // the desired state may have changed, or a lease is due
	features  []switchyardv1.SidecarFeature // announced by its current stream
	// lease is a hold lease due on the stream (Lease), sent by serve if
	// the sidecar's desired state still comes from lease.rule then.
	lease *pendingLease
}

// pendingLease is a hold lease to send: for rule's desired state, valid for
// validFor.
type pendingLease struct {
	rule     string
	validFor time.Duration
}

func sidecarKey(id *switchyardv1.SidecarIdentity) string { return id.GetApp() + "/" + id.GetInstance() }

// Registry is the sidecar registry and the desired state of every sidecar.
// Its desired state — the rules cutovers and operators set — is the only
// source of truth: what a sidecar reports is shown, never adopted. The
// server serves SidecarService.Connect with it (see serve).
type Registry struct {
	store *Store
	log   *zap.Logger

	// forgetAfter is how long a disconnected sidecar stays listed: a pod
	// replaced in a rollout never comes back under its old instance name.
	// Guarded by mu (tests change it).
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
	// usageFor stands in for what the named sidecars report as their
	// usage (tests: export_test.go).
	usageFor map[string]*switchyardv1.Usage
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

// ruleLocked returns the rule that gives a sidecar its desired state: the
// newest matching one; nil if none matches.
func (r *Registry) ruleLocked(sc *sidecar) *rule {
	var best *rule
	for i := range r.state.Rules {
		ru := &r.state.Rules[i]
		if ru.matches(sc.id) && (best == nil || ru.Seq > best.Seq) {
			best = ru
		}
	}
	return best
}

// desiredLocked computes a sidecar's desired state: the newest matching
// rule's, in the form the sidecar's features understand, or — when none
// matches — an empty one at version 0.
func (r *Registry) desiredLocked(sc *sidecar) *switchyardv1.DesiredState {
	best := r.ruleLocked(sc)
	if best == nil {
		// Version 0 with no content: "nothing for you", the sidecar keeps
		// its own configuration (and counts as ready).
		return &switchyardv1.DesiredState{}
	}
	d := &switchyardv1.DesiredState{Version: best.Version, ActiveCluster: best.Active}
	if best.Gate != nil {
		d.Gate = best.Gate.toProto(sc.features)
	}
	return d
}

// Lease renews the hold lease of rule id's sidecars: every connected
// sidecar whose desired state comes from that rule, with a gate that holds
// requests, and which announced SIDECAR_FEATURE_HOLD_LEASE, is sent a
// HoldLease for its desired version, valid for validFor from when it
// arrives. It returns how many sidecars are due one. Nothing is stored and
// no version is used: a lease lives only while the caller keeps renewing
// it. A lease is sent after the desired state it is for; one due when the
// sidecar's state has moved to another rule is dropped.
func (r *Registry) Lease(id string, validFor time.Duration) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, sc := range r.sidecars {
		if !sc.connected || !slices.Contains(sc.features, switchyardv1.SidecarFeature_SIDECAR_FEATURE_HOLD_LEASE) {
			continue
		}
		if ru := r.ruleLocked(sc); ru == nil || ru.ID != id || !ru.Gate.holds() {
			continue
		}
		sc.lease = &pendingLease{rule: id, validFor: validFor}
		n++
		select {
		case sc.notify <- struct{}{}:
		default:
		}
	}
	return n
}

// takeLeaseLocked returns the hold lease due for a sidecar, if its desired
// state still comes from the leased rule and holds requests, and clears it.
func (r *Registry) takeLeaseLocked(sc *sidecar) *switchyardv1.HoldLease {
	l := sc.lease
	sc.lease = nil
	if l == nil {
		return nil
	}
	ru := r.ruleLocked(sc)
	if ru == nil || ru.ID != l.rule || !ru.Gate.holds() {
		return nil
	}
	return &switchyardv1.HoldLease{Version: ru.Version, ValidFor: durationpb.New(l.validFor)}
}

// SetRule creates or updates the rule with the given id, persists it, and
// pushes the new desired state to every sidecar it matches. It returns the
// rule's new version: a sidecar that applied it acknowledges at least that.
func (r *Registry) SetRule(id string, sel *switchyardv1.SidecarSelector, active string, gate *gateSpec) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setRuleLocked(id, sel, active, gate)
}

func (r *Registry) setRuleLocked(id string, sel *switchyardv1.SidecarSelector, active string, gate *gateSpec) (uint64, error) {
	next := r.state
	next.Rules = slices.Clone(r.state.Rules)
	var err error
	if next.Counter, err = nextVersion(next.Counter); err != nil {
		return 0, err
	}
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

// Declare makes active, with no gate, the desired state of the sidecars
// sel selects, as a new rule (the newest, so it wins over older ones) —
// only if every connected sidecar it selects reports that it runs on
// active already: it records what holds and moves no client. It returns
// the rule's version and the connected sidecars it covers. Errors are
// FailedPrecondition, naming the sidecar, or the store's.
func (r *Registry) Declare(sel *switchyardv1.SidecarSelector, active string) (uint64, []string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	selected := rule{Apps: sel.GetApps(), Labels: sel.GetLabels()}
	var covered []string
	for k, sc := range r.sidecars {
		if !sc.connected || !selected.matches(sc.id) {
			continue
		}
		switch got := sc.status.GetActiveCluster(); {
		case sc.status == nil:
			return 0, nil, status.Errorf(codes.FailedPrecondition, "sidecar %s has not reported its status yet", k)
		case got != active:
			return 0, nil, status.Errorf(codes.FailedPrecondition,
				"sidecar %s runs on cluster %q, not %q: declaring records where sidecars run and moves none; a cutover moves them", k, got, active)
		}
		covered = append(covered, k)
	}
	sort.Strings(covered)
	v, err := r.setRuleLocked(fmt.Sprintf("declared-%d", r.state.Counter+1), sel, active, nil)
	if err != nil {
		return 0, nil, err
	}
	return v, covered, nil
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

// checkIdentity checks the identity of a sidecar's first message: an
// application and an instance, names and labels as internal/identity
// wants them. The error is InvalidArgument, naming the field.
func checkIdentity(id *switchyardv1.SidecarIdentity) error {
	if id.GetApp() == "" || id.GetInstance() == "" {
		return status.Error(codes.InvalidArgument, "the first message must carry the sidecar's identity: app and instance")
	}
	if err := identity.CheckName(id.GetApp()); err != nil {
		return status.Errorf(codes.InvalidArgument, "identity.app: %v", err)
	}
	if err := identity.CheckName(id.GetInstance()); err != nil {
		return status.Errorf(codes.InvalidArgument, "identity.instance: %v", err)
	}
	if err := identity.CheckLabels(id.GetLabels()); err != nil {
		return status.Errorf(codes.InvalidArgument, "identity.labels: %v", err)
	}
	return nil
}

// checkReport checks what a sidecar's message adds that the registry
// keeps beyond its status: the cluster names. The error is
// InvalidArgument.
func checkReport(m *switchyardv1.ConnectRequest) error {
	if n := len(m.GetClusters()); n > identity.MaxClusters {
		return status.Errorf(codes.InvalidArgument, "clusters: %d names, at most %d", n, identity.MaxClusters)
	}
	for i, c := range m.GetClusters() {
		if err := identity.CheckName(c); err != nil {
			return status.Errorf(codes.InvalidArgument, "clusters[%d]: %v", i, err)
		}
	}
	return nil
}

// pruneLocked forgets sidecars disconnected for longer than forgetAfter.
func (r *Registry) pruneLocked() {
	for k, sc := range r.sidecars {
		if !sc.connected && !sc.goneAt.IsZero() && time.Since(sc.goneAt) > r.forgetAfter {
			delete(r.sidecars, k)
		}
	}
}

// forgetLoop forgets sidecars disconnected for longer than forgetAfter,
// every tenth of forgetAfter, until ctx ends or the registry stops: a
// registry nobody lists would otherwise keep every instance a credential
// ever named. The server's Serve runs it.
func (r *Registry) forgetLoop(ctx context.Context) {
	r.mu.Lock()
	every := max(r.forgetAfter/10, time.Second)
	r.mu.Unlock()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stopping:
			return
		case <-tick.C:
			r.mu.Lock()
			r.pruneLocked()
			r.mu.Unlock()
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
			ApplyError: sc.applyErr, Status: sc.status, LastSeen: timestamppb.New(sc.lastSeen), Credential: sc.who.String(),
			Features: slices.Clone(sc.features),
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

// serve serves one sidecar's stream, opened by who (already authorized to
// connect). The first message must name the sidecar; it is refused when
// its names break the rules of internal/identity (InvalidArgument), when
// who may not claim that application or instance (PermissionDenied), when
// it reports an applied version above both the counter and
// MaxAppliedVersion (InvalidArgument), when who's sidecars number
// perCredential already, all connected (ResourceExhausted), or while
// another stream of the same instance is connected (AlreadyExists: a
// sidecar whose stream broke reconnects once the control plane has
// noticed, within its keepalive of ~15 s). A later message that breaks the
// rules ends the stream (InvalidArgument). serve returns when the stream
// ends, the server stops, or the caller goes away; it calls release (the
// credential's stream count) before the sidecar shows disconnected.
func (r *Registry) serve(stream switchyardv1.SidecarService_ConnectServer, who principal, perCredential int, release func()) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetIdentity()
	if err := checkIdentity(id); err != nil {
		r.log.Warn("sidecar stream refused: a malformed identity", zap.Stringer("who", who), zap.Error(err))
		return err
	}
	if err := checkReport(first); err != nil {
		r.log.Warn("sidecar stream refused: a malformed report", zap.Stringer("who", who),
			zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()), zap.Error(err))
		return err
	}
	if err := who.mayClaim(id); err != nil {
		r.log.Warn("sidecar stream refused: a claim its credential does not allow", zap.Stringer("who", who),
			zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()), zap.Error(err))
		return err
	}
	sc, gen, err := r.attach(id, first, who, perCredential)
	if err != nil {
		r.log.Warn("sidecar stream refused", zap.Stringer("who", who), zap.String("app", id.GetApp()),
			zap.String("instance", id.GetInstance()), zap.Uint64("applied", first.GetAppliedVersion()), zap.Error(err))
		return err
	}
	r.log.Info("sidecar connected", zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()),
		zap.Uint64("applied", first.GetAppliedVersion()), zap.Stringer("who", who))
	defer func() {
		// The stream stops counting against its credential before the
		// sidecar shows disconnected: whoever sees it gone may connect
		// another in its place.
		release()
		r.detach(sc, gen)
	}()

	// The receiver is owned by this handler: when the handler returns, gRPC
	// ends the stream and Recv returns.
	errc := make(chan error, 1)    // the stream ended
	invalid := make(chan error, 1) // a message broke the rules
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := checkReport(m); err != nil {
				invalid <- err
				return
			}
			r.report(sc, gen, m)
		}
	}()
	var sent *switchyardv1.DesiredState
	for {
		r.mu.Lock()
		d := r.desiredLocked(sc)
		lease := r.takeLeaseLocked(sc)
		r.mu.Unlock()
		if d != nil && (sent == nil || !proto.Equal(d, sent)) {
			if err := stream.Send(&switchyardv1.ConnectResponse{Desired: d}); err != nil {
				return err
			}
			sent = d
		}
		// After the desired state it is for (computed together).
		if lease != nil {
			if err := stream.Send(&switchyardv1.ConnectResponse{HoldLease: lease}); err != nil {
				return err
			}
		}
		select {
		case <-sc.notify:
		case err := <-errc:
			if errors.Is(err, ctx.Err()) || status.Code(err) == codes.Canceled {
				return nil
			}
			return nil // the sidecar went away; it reconnects
		case err := <-invalid:
			r.log.Warn("sidecar stream ended: a malformed report", zap.Stringer("who", who),
				zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()), zap.Error(err))
			return err
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

// attach registers a new stream of the sidecar id, opened by who, with its
// first message. It refuses a second stream of a connected instance, an
// applied version above both the counter and MaxAppliedVersion, and a new
// instance beyond perCredential sidecars of who when all are connected;
// see serve.
func (r *Registry) attach(id *switchyardv1.SidecarIdentity, first *switchyardv1.ConnectRequest, who principal,
	perCredential int) (*sidecar, uint64, error) {
	applied := first.GetAppliedVersion()
	r.mu.Lock()
	defer r.mu.Unlock()
	if applied > r.state.Counter && applied > MaxAppliedVersion {
		return nil, 0, status.Errorf(codes.InvalidArgument,
			"applied_version %d is above any this control plane issued and above the largest it accepts from a sidecar (%d): "+
				"restart the sidecar to start over", applied, uint64(MaxAppliedVersion))
	}
	k := sidecarKey(id)
	sc := r.sidecars[k]
	if sc != nil && sc.connected {
		// Whoever opened it: a stream cannot take over an instance (and
		// stand in for its acknowledgements) while the instance is there.
		return nil, 0, status.Errorf(codes.AlreadyExists,
			"sidecar %s is connected already: a second stream for the same instance is refused (a sidecar that lost its stream is let back in once the control plane has noticed)", k)
	}
	if sc == nil {
		if err := r.makeRoomLocked(who, perCredential); err != nil {
			return nil, 0, err
		}
	}
	if applied > r.state.Counter {
		if err := r.reissueLocked(applied, id); err != nil {
			return nil, 0, status.Errorf(codes.Unavailable, "re-issue desired state above version %d: %v", applied, err)
		}
		r.log.Warn("a sidecar reports a desired-state version this control plane never issued (its store was lost, "+
			"or restored from a backup): the sidecar keeps what it runs until a rule covers it; versions continue above it",
			zap.String("app", id.GetApp()), zap.String("instance", id.GetInstance()), zap.Uint64("applied", applied),
			zap.Stringer("who", who))
	}
	if sc == nil {
		sc = &sidecar{notify: make(chan struct{}, 1)}
		r.sidecars[k] = sc
	} else if sc.who.String() != who.String() {
		r.log.Warn("sidecar reconnects with another credential", zap.String("app", id.GetApp()),
			zap.String("instance", id.GetInstance()), zap.Stringer("was", sc.who), zap.Stringer("now", who))
	}
	r.gen++
	sc.id, sc.gen, sc.connected, sc.goneAt, sc.who = proto.Clone(id).(*switchyardv1.SidecarIdentity), r.gen, true, time.Time{}, who
	sc.features, sc.lease = slices.Clone(first.GetFeatures()), nil
	r.applyReportLocked(sc, first)
	r.broadcastLocked()
	return sc, r.gen, nil
}

// makeRoomLocked makes room for one more sidecar of who's credential:
// when it has perCredential sidecars already, the one disconnected longest
// ago is forgotten; when all of them are connected, the error is
// ResourceExhausted.
func (r *Registry) makeRoomLocked(who principal, perCredential int) error {
	cred := who.credential()
	n := 0
	var oldest string
	for k, sc := range r.sidecars {
		if sc.who.credential() != cred {
			continue
		}
		n++
		if !sc.connected && (oldest == "" || sc.goneAt.Before(r.sidecars[oldest].goneAt)) {
			oldest = k
		}
	}
	if n < perCredential {
		return nil
	}
	if oldest == "" {
		return status.Errorf(codes.ResourceExhausted,
			"%s has %d sidecars connected, the most one credential may (limits.sidecarsPerCredential): give each namespace or team a token of its own, or raise the limit",
			who, n)
	}
	r.log.Info("sidecar forgotten early: its credential reached limits.sidecarsPerCredential", zap.String("sidecar", oldest),
		zap.Stringer("who", who), zap.Int("limit", perCredential))
	delete(r.sidecars, oldest)
	return nil
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

// maxApplyError bounds the apply error kept of a report; the rest is cut.
const maxApplyError = 1024

func (r *Registry) applyReportLocked(sc *sidecar, m *switchyardv1.ConnectRequest) {
	now := time.Now()
	applyErr := m.GetApplyError()
	if len(applyErr) > maxApplyError {
		applyErr = strings.ToValidUTF8(applyErr[:maxApplyError], "") + "..."
	}
	sc.applied, sc.applyErr, sc.lastSeen = m.GetAppliedVersion(), applyErr, now
	if m.GetStatus() != nil {
		sc.status, sc.statusAt = m.GetStatus(), m.GetAppliedVersion()
	}
	if len(m.GetClusters()) > 0 {
		sc.clusters = slices.Clone(m.GetClusters())
	}
}

// counts returns the number of sidecars per application and state:
// connected (acknowledged its desired state), unacknowledged (behind, or
// failing to apply), diverged (runs a version this registry did not issue
// it: see reissueLocked), disconnected.
func (r *Registry) counts() map[[2]string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	out := map[[2]string]int{}
	for _, sc := range r.sidecars {
		out[[2]string{sc.id.GetApp(), r.stateLocked(sc)}]++
	}
	return out
}

// stateLocked is a sidecar's state as counts names it.
func (r *Registry) stateLocked(sc *sidecar) string {
	want := r.desiredLocked(sc).GetVersion()
	switch {
	case !sc.connected:
		return "disconnected"
	case sc.applied > want:
		// Checked before the apply error: such a sidecar refuses the
		// registry's lower version, and that is the divergence, not a
		// failure to apply.
		return "diverged"
	case sc.applyErr != "" || sc.applied < want:
		return "unacknowledged"
	}
	return "connected"
}

// reissueLocked raises the version counter to floor and gives every rule
// that matches id a new version above it, so a sidecar that applied
// versions up to floor accepts them: it is sent the registry's state, never
// the other way round. A sidecar no rule matches is sent nothing (version
// 0) and keeps what it runs; counts and List show it as diverged until an
// operator declares its state or a cutover moves it.
func (r *Registry) reissueLocked(floor uint64, id *switchyardv1.SidecarIdentity) error {
	next := r.state
	next.Rules = slices.Clone(r.state.Rules)
	next.Counter = floor
	for i := range next.Rules {
		if !next.Rules[i].matches(id) {
			continue
		}
		v, err := nextVersion(next.Counter)
		if err != nil {
			return err
		}
		next.Counter, next.Rules[i].Version = v, v
	}
	if err := r.store.Put("registry", "state", next); err != nil {
		return err
	}
	r.state = next
	for _, sc := range r.sidecars {
		select {
		case sc.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// Writes returns the topics the sidecars keys report their clients
// produced to, each with the sidecars that did, as last reported (what
// SetUsage stands in for too: a superset is what the callers need).
func (r *Registry) Writes(keys []string) map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for _, k := range keys {
		sc := r.sidecars[k]
		if sc == nil {
			continue
		}
		for _, u := range []*switchyardv1.Usage{sc.status.GetUsage(), r.usageFor[k]} {
			for _, t := range u.GetTopics() {
				if t.GetProduced() && !slices.Contains(out[t.GetTopic()], k) {
					out[t.GetTopic()] = append(out[t.GetTopic()], k)
				}
			}
		}
	}
	return out
}

// Usage returns the usage reported by the connected sidecars sel selects
// and, separately, by every other connected sidecar.
func (r *Registry) Usage(sel *switchyardv1.SidecarSelector) (selected, others []sidecarUsage) {
	ru := rule{Apps: sel.GetApps(), Labels: sel.GetLabels()}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, sc := range r.sidecars {
		if !sc.connected {
			continue
		}
		u := sidecarUsage{Key: k, App: sc.id.GetApp(), Usage: sc.status.GetUsage()}
		if o, ok := r.usageFor[k]; ok {
			u.Usage = o
		}
		if ru.matches(sc.id) {
			selected = append(selected, u)
		} else {
			others = append(others, u)
		}
	}
	byKey := func(a, b sidecarUsage) int { return strings.Compare(a.Key, b.Key) }
	slices.SortFunc(selected, byKey)
	slices.SortFunc(others, byKey)
	return selected, others
}
