package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// Mirror is what a cutover needs of a mirror engine (*mirror.Mirror).
type Mirror interface {
	Status() mirror.Status
	CaughtUp(ctx context.Context, topics ...string) (bool, string, error)
	SyncGroups(ctx context.Context, groups []string) (mirror.GroupSyncReport, error)
	GroupsDrained(ctx context.Context, groups []string, topics ...string) (bool, string, error)
	GroupsJoined(ctx context.Context, groups []string) (bool, string, error)
	// PrepareGroups readies the target's coordinators of groups (its
	// offsets topic, on a cluster that never had a group).
	PrepareGroups(ctx context.Context, groups []string) error
	// RefreshTopics syncs topics now: topics created on the source since
	// the last sync are mirrored.
	RefreshTopics(ctx context.Context) error
}

// MirrorRef is a mirror the control plane runs, between two of its
// clusters.
type MirrorRef struct {
	Name, Source, Target string
	Mirror               Mirror
}

// Kafka API keys the cutover gates.
const (
	produceKey = 0
	fetchKey   = 1
	// endTxnKey: a sidecar counts each transaction open through it as one
	// Produce and one EndTxn in flight (its records and its end are still
	// to come), so the drain waits for open transactions and can name them.
	endTxnKey = 26
)

// Controller runs cutovers.
type Controller struct {
	reg      *Registry
	store    *Store
	log      *zap.Logger
	clusters map[string]*switchyardv1.Cluster
	mirrors  map[string]*MirrorRef

	ctx context.Context // the controller's lifetime (Start)
	wg  sync.WaitGroup

	mu       sync.Mutex
	cutovers map[string]*cutoverRun
	changed  chan struct{}
	m        *metrics // nil until Instrument

	// leasesPaused stops renewing hold leases (tests: a control plane
	// that went silent while its cutover waits).
	leasesPaused atomic.Bool
}

// Instrument registers the controller's and the registry's metrics.
func (ct *Controller) Instrument(reg prometheus.Registerer) error {
	m, err := newMetrics(reg)
	if err != nil {
		return fmt.Errorf("control metrics: %w", err)
	}
	ct.mu.Lock()
	ct.m = m
	ct.mu.Unlock()
	return nil
}

// observe refreshes the gauges from the cutovers and the registry; it runs
// on every change.
func (ct *Controller) observeLocked() {
	if ct.m == nil {
		return
	}
	ct.m.active.Reset()
	for _, run := range ct.cutovers {
		if s := run.c.GetStep(); !terminal(s) {
			ct.m.active.WithLabelValues(StepName(s)).Inc()
		}
	}
}

// cutoverRun is one cutover and the goroutine driving it.
type cutoverRun struct {
	id          string                // the cutover's id, fixed: readable without Controller.mu
	c           *switchyardv1.Cutover // guarded by Controller.mu; replaced, never mutated in place once published
	keys        []string              // the selected sidecars (app/instance), fixed at preflight
	abort       chan struct{}
	abortOnce   sync.Once
	gateVersion uint64 // the desired-state version that gated Produce (memory only)
	// saveMu orders the stored transitions (enter), an abort and the
	// driver's progress updates: each copies, changes and publishes the
	// cutover (storing it first when it is a transition or an abort),
	// never interleaved.
	saveMu sync.Mutex
}

// NewController prepares a controller; Start resumes stored cutovers.
func NewController(reg *Registry, store *Store, clusters []*switchyardv1.Cluster, mirrors []*MirrorRef, log *zap.Logger) *Controller {
	ct := &Controller{reg: reg, store: store, log: log, clusters: map[string]*switchyardv1.Cluster{},
		mirrors: map[string]*MirrorRef{}, cutovers: map[string]*cutoverRun{}, changed: make(chan struct{})}
	for _, c := range clusters {
		ct.clusters[c.GetName()] = c
	}
	for _, m := range mirrors {
		ct.mirrors[m.Name] = m
	}
	return ct
}

// Start loads the stored cutovers and resumes those in progress: one past
// the point of no return (release) goes on; one before it rolls back,
// since the control plane cannot prove what happened while it was down.
// A two-phase cutover stopped while its groups drained, quiesced or were
// synced quiesces them again (its producers are on the target already);
// from its groups' flip on it goes on.
// The drivers stop when ctx ends; Wait waits for them.
func (ct *Controller) Start(ctx context.Context) error {
	ct.ctx = ctx
	stored, err := ct.store.List("cutovers", func() proto.Message { return &switchyardv1.Cutover{} })
	if err != nil {
		return err
	}
	for _, m := range stored {
		c := m.(*switchyardv1.Cutover)
		run := &cutoverRun{id: c.GetId(), c: c, abort: make(chan struct{})}
		for _, a := range c.GetSidecars() {
			run.keys = append(run.keys, a.GetApp()+"/"+a.GetInstance())
		}
		ct.mu.Lock()
		ct.cutovers[c.GetId()] = run
		ct.mu.Unlock()
		if terminal(c.GetStep()) {
			continue
		}
		switch step := c.GetStep(); {
		case step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
			step == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
			step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
			ct.log.Info("resuming cutover", zap.String("id", c.GetId()), zap.Stringer("step", c.GetStep()))
		case step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN && !c.GetAbortRequested():
			// The group drain again: quiescing at once would hold the
			// commits of what the members read just before, which they
			// then read again on the target (control/crashtest
			// 2p-group-drain: 346 records read twice). Its gate, if any, is
			// set again.
			ct.log.Info("resuming cutover", zap.String("id", c.GetId()), zap.Stringer("step", c.GetStep()))
		case groupsMayRollBack(c):
			// The producers moved; the groups' applications are still on
			// the source, perhaps quiesced. Quiescing again is idempotent
			// and proves from fresh reports that their offsets are final.
			ct.log.Warn("resuming a cutover's groups at quiesce after a restart", zap.String("id", c.GetId()), zap.Stringer("step", c.GetStep()))
			if err := ct.enter(run, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE,
				fmt.Sprintf("the control plane restarted during %s: quiescing again", StepName(c.GetStep())), ""); err != nil {
				return err
			}
		default:
			ct.log.Warn("rolling back a cutover interrupted by a restart", zap.String("id", c.GetId()), zap.Stringer("step", c.GetStep()))
			if err := ct.enter(run, switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, "",
				fmt.Sprintf("the control plane restarted during %s", StepName(c.GetStep()))); err != nil {
				return err
			}
		}
		ct.wg.Add(1)
		go ct.drive(run)
	}
	return nil
}

// Wait waits for every cutover driver to stop (after Start's ctx ends).
func (ct *Controller) Wait() { ct.wg.Wait() }

func terminal(s switchyardv1.CutoverStep) bool {
	return s == switchyardv1.CutoverStep_CUTOVER_STEP_DONE || s == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK ||
		s == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
}

// StepName is a step as people read it: "sync-groups".
func StepName(s switchyardv1.CutoverStep) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s.String(), "CUTOVER_STEP_"), "_", "-"))
}

// Changed returns a channel closed at the next change of any cutover.
func (ct *Controller) Changed() <-chan struct{} {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.changed
}

// Get returns a copy of a cutover.
func (ct *Controller) Get(id string) (*switchyardv1.Cutover, bool) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	run := ct.cutovers[id]
	if run == nil {
		return nil, false
	}
	return proto.Clone(run.c).(*switchyardv1.Cutover), true
}

// List returns every cutover, newest first.
func (ct *Controller) List() []*switchyardv1.Cutover {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	out := make([]*switchyardv1.Cutover, 0, len(ct.cutovers))
	for _, run := range ct.cutovers {
		out = append(out, proto.Clone(run.c).(*switchyardv1.Cutover))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].GetCreated().AsTime(), out[j].GetCreated().AsTime()
		return a.After(b) || (a.Equal(b) && out[i].GetId() > out[j].GetId())
	})
	return out
}

// withDefaults fills in and checks a cutover policy.
func withDefaults(p *switchyardv1.CutoverPolicy) (*switchyardv1.CutoverPolicy, error) {
	p = proto.Clone(p).(*switchyardv1.CutoverPolicy)
	if p == nil {
		p = &switchyardv1.CutoverPolicy{}
	}
	switch strings.ToUpper(p.GetGateMode()) {
	case "":
		p.GateMode = "HOLD"
	case "HOLD", "REJECT":
		p.GateMode = strings.ToUpper(p.GetGateMode())
	default:
		return nil, fmt.Errorf("policy.gate_mode: %q: want HOLD or REJECT", p.GetGateMode())
	}
	for _, d := range []struct {
		name string
		v    **durationpb.Duration
		def  time.Duration
	}{{"drain_timeout", &p.DrainTimeout, 30 * time.Second}, {"hold_budget", &p.HoldBudget, 10 * time.Second},
		{"ack_timeout", &p.AckTimeout, 10 * time.Second}} {
		if *d.v == nil {
			*d.v = durationpb.New(d.def)
		}
		if err := (*d.v).CheckValid(); err != nil || (*d.v).AsDuration() <= 0 {
			return nil, fmt.Errorf("policy.%s: must be a positive duration", d.name)
		}
	}
	if p.QuiesceTimeout == nil {
		p.QuiesceTimeout = durationpb.New(15 * time.Second)
	}
	if err := p.QuiesceTimeout.CheckValid(); err != nil || p.QuiesceTimeout.AsDuration() <= 0 {
		return nil, errors.New("policy.quiesce_timeout: must be a positive duration")
	}
	// 0 is meaningful (quiesce at once): only an unset one gets the default.
	if p.GroupDrainTimeout == nil {
		p.GroupDrainTimeout = durationpb.New(10 * time.Second)
	}
	if err := p.GroupDrainTimeout.CheckValid(); err != nil || p.GroupDrainTimeout.AsDuration() < 0 {
		return nil, errors.New("policy.group_drain_timeout: must not be negative")
	}
	if p.GetMaxPreflightLag() == 0 {
		p.MaxPreflightLag = 10000
	}
	if p.GetMaxPreflightLag() < 0 {
		return nil, errors.New("policy.max_preflight_lag: must not be negative")
	}
	return p, nil
}

// Create validates a spec and starts a cutover.
func (ct *Controller) Create(spec *switchyardv1.CutoverSpec) (*switchyardv1.Cutover, error) {
	spec = proto.Clone(spec).(*switchyardv1.CutoverSpec)
	if spec == nil || len(spec.GetSelector().GetApps()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "spec.selector.apps: at least one application")
	}
	if spec.GetSource() == "" || spec.GetTarget() == "" || spec.GetSource() == spec.GetTarget() {
		return nil, status.Error(codes.InvalidArgument, "spec.source and spec.target: two different cluster names")
	}
	for _, n := range []string{spec.GetSource(), spec.GetTarget()} {
		if ct.clusters[n] == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "cluster %q is not configured (known: %s)", n, strings.Join(ct.clusterNames(), ", "))
		}
	}
	m, err := ct.mirrorFor(spec)
	if err != nil {
		return nil, err
	}
	spec.Mirror = m.Name
	if spec.Policy, err = withDefaults(spec.GetPolicy()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "spec."+err.Error())
	}
	if len(ct.reg.Select(spec.GetSelector())) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "no connected sidecar matches apps %v with labels %v", spec.GetSelector().GetApps(), spec.GetSelector().GetLabels())
	}
	cov, err := ct.coverageFor(spec)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "coverage: %v", err)
	}
	now := time.Now()
	c := &switchyardv1.Cutover{Id: newCutoverID(now), Spec: spec, Created: timestamppb.New(now), Coverage: cov}
	run := &cutoverRun{id: c.GetId(), c: c, abort: make(chan struct{})}
	ct.mu.Lock()
	for _, other := range ct.cutovers {
		if !terminal(other.c.GetStep()) && overlaps(other.c.GetSpec().GetSelector().GetApps(), spec.GetSelector().GetApps()) {
			ct.mu.Unlock()
			return nil, status.Errorf(codes.Aborted, "cutover %s of %v is still running (%s)", other.c.GetId(),
				other.c.GetSpec().GetSelector().GetApps(), StepName(other.c.GetStep()))
		}
	}
	ct.cutovers[c.GetId()] = run
	ct.mu.Unlock()
	if err := ct.enter(run, switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT, "", ""); err != nil {
		ct.mu.Lock()
		delete(ct.cutovers, c.GetId())
		ct.mu.Unlock()
		return nil, status.Errorf(codes.Internal, "store the cutover: %v", err)
	}
	ct.log.Info("cutover created", zap.String("id", c.GetId()), zap.Strings("apps", spec.GetSelector().GetApps()),
		zap.String("from", spec.GetSource()), zap.String("to", spec.GetTarget()))
	ct.wg.Add(1)
	go ct.drive(run)
	out, _ := ct.Get(c.GetId())
	return out, nil
}

// Declare declares the sidecars sel selects to run on cluster active, with
// no gate (see Registry.Declare), unless a cutover of one of their
// applications is running (Aborted): the cutover owns their state then.
func (ct *Controller) Declare(sel *switchyardv1.SidecarSelector, active string) (*switchyardv1.DeclareStateResponse, error) {
	if len(sel.GetApps()) == 0 || slices.Contains(sel.GetApps(), "") {
		return nil, status.Error(codes.InvalidArgument, "selector.apps: at least one application, none empty")
	}
	if active == "" {
		return nil, status.Error(codes.InvalidArgument, "active_cluster: the cluster the sidecars run on")
	}
	if ct.clusters[active] == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %q is not configured (known: %s)", active, strings.Join(ct.clusterNames(), ", "))
	}
	// Held across the registry's update, so no cutover of these
	// applications starts in between (lock order: Controller.mu, then
	// Registry.mu).
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, other := range ct.cutovers {
		if !terminal(other.c.GetStep()) && overlaps(other.c.GetSpec().GetSelector().GetApps(), sel.GetApps()) {
			return nil, status.Errorf(codes.Aborted, "cutover %s of %v is running (%s): it owns their desired state", other.c.GetId(),
				other.c.GetSpec().GetSelector().GetApps(), StepName(other.c.GetStep()))
		}
	}
	v, covered, err := ct.reg.Declare(sel, active)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Errorf(codes.Internal, "store the declared state: %v", err)
		}
		return nil, err
	}
	ct.log.Info("state declared", zap.Strings("apps", sel.GetApps()), zap.Any("labels", sel.GetLabels()),
		zap.String("active", active), zap.Uint64("version", v), zap.Strings("sidecars", covered))
	return &switchyardv1.DeclareStateResponse{Version: v, Sidecars: covered}, nil
}

func overlaps(a, b []string) bool {
	return slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
}

func (ct *Controller) clusterNames() []string {
	var out []string
	for n := range ct.clusters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (ct *Controller) mirrorFor(spec *switchyardv1.CutoverSpec) (*MirrorRef, error) {
	if spec.GetMirror() != "" {
		m := ct.mirrors[spec.GetMirror()]
		if m == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "mirror %q is not configured", spec.GetMirror())
		}
		if m.Source != spec.GetSource() || m.Target != spec.GetTarget() {
			return nil, status.Errorf(codes.FailedPrecondition, "mirror %q copies %s to %s, not %s to %s", m.Name, m.Source, m.Target, spec.GetSource(), spec.GetTarget())
		}
		return m, nil
	}
	var found []*MirrorRef
	for _, m := range ct.mirrors {
		if m.Source == spec.GetSource() && m.Target == spec.GetTarget() {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, status.Errorf(codes.FailedPrecondition, "no mirror copies %s to %s: the data must be on the target before clients move", spec.GetSource(), spec.GetTarget())
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "several mirrors copy %s to %s: name one in spec.mirror", spec.GetSource(), spec.GetTarget())
	}
}

func newCutoverID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "c-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Abort asks a cutover to roll back. It fails once the gates have been
// released on the target. In a two-phase cutover it is allowed again
// while the groups drain, quiesce and sync (their applications return to
// the source; the producers stay on the target), and refused from the
// groups' flip on. The abort is stored before it is acted on.
func (ct *Controller) Abort(id, reason string) (*switchyardv1.Cutover, error) {
	ct.mu.Lock()
	run := ct.cutovers[id]
	ct.mu.Unlock()
	if run == nil {
		return nil, status.Errorf(codes.NotFound, "no cutover %q", id)
	}
	run.saveMu.Lock()
	ct.mu.Lock()
	step := run.c.GetStep()
	c := proto.Clone(run.c).(*switchyardv1.Cutover)
	ct.mu.Unlock()
	switch {
	case terminal(step):
		run.saveMu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "cutover %s has ended (%s)", id, StepName(step))
	case step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE || step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY:
		run.saveMu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "cutover %s is past the point of no return: the gates are being released on the target (%s)", id, StepName(step))
	case step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP || step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
		run.saveMu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "cutover %s is past the point of no return for its groups: their applications are moving to the target (%s)", id, StepName(step))
	}
	c.AbortRequested = true
	if reason == "" {
		reason = "aborted by an operator"
	}
	if c.Error == "" {
		c.Error = reason
	}
	if err := ct.store.Put("cutovers", id, c); err != nil {
		run.saveMu.Unlock()
		return nil, status.Errorf(codes.Internal, "store the abort: %v", err)
	}
	ct.publish(run, c)
	run.saveMu.Unlock()
	run.abortOnce.Do(func() { close(run.abort) })
	out, _ := ct.Get(id)
	return out, nil
}

// update applies f to a copy of the cutover and publishes it (not
// stored: progress for watchers). Only the cutover's driver calls it. It
// holds saveMu, as enter and Abort do: a copy taken before an abort and
// published after it would drop the abort's flag and reason.
func (ct *Controller) update(run *cutoverRun, f func(c *switchyardv1.Cutover)) {
	run.saveMu.Lock()
	defer run.saveMu.Unlock()
	ct.mu.Lock()
	c := proto.Clone(run.c).(*switchyardv1.Cutover)
	ct.mu.Unlock()
	f(c)
	c.Updated = timestamppb.Now()
	ct.publish(run, c)
}

// observeStepLocked records a step change: the step left's duration, and
// the outcome once the cutover ends.
func (ct *Controller) observeStepLocked(prev, c *switchyardv1.Cutover) {
	if n := len(prev.GetHistory()); n > 0 {
		if h := prev.GetHistory()[n-1]; h.GetStarted() != nil {
			ct.m.stepSeconds.WithLabelValues(StepName(h.GetStep())).Observe(time.Since(h.GetStarted().AsTime()).Seconds())
		}
	}
	switch c.GetStep() {
	case switchyardv1.CutoverStep_CUTOVER_STEP_DONE:
		ct.m.cutovers.WithLabelValues("done").Inc()
	case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK:
		ct.m.cutovers.WithLabelValues("rolled_back").Inc()
	case switchyardv1.CutoverStep_CUTOVER_STEP_FAILED:
		ct.m.cutovers.WithLabelValues("failed").Inc()
	}
	// A window is observed as its release ends (a two-phase cutover's
	// producers' even if its groups fail later).
	if prev.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE && c.GetBlockWindow() != nil {
		ct.m.blockWindow.Observe(c.GetBlockWindow().AsDuration().Seconds())
	}
	if prev.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE && c.GetGroupBlockWindow() != nil {
		ct.m.groupBlockWindow.Observe(c.GetGroupBlockWindow().AsDuration().Seconds())
	}
}

// refreshSidecarGauge recomputes the sidecar gauge; it runs before each
// scrape.
func (ct *Controller) refreshSidecarGauge() {
	ct.mu.Lock()
	m := ct.m
	ct.mu.Unlock()
	if m == nil {
		return
	}
	counts := ct.reg.counts()
	m.sidecars.Reset()
	for k, n := range counts {
		m.sidecars.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}

// publish makes c the cutover's state and wakes watchers.
func (ct *Controller) publish(run *cutoverRun, c *switchyardv1.Cutover) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	prev := run.c
	run.c = c
	if ct.m != nil && prev.GetStep() != c.GetStep() {
		ct.observeStepLocked(prev, c)
	}
	ct.observeLocked()
	close(ct.changed)
	ct.changed = make(chan struct{})
}

// enter moves the cutover to a step and stores it before anything of the
// step happens — and before any watcher sees it. detail closes the step
// left; errMsg records why a rollback or failure happens. An abort stored
// before release wins: entering release then rolls back instead; one
// stored before a two-phase cutover's group flip rolls the groups back.
func (ct *Controller) enter(run *cutoverRun, step switchyardv1.CutoverStep, detail, errMsg string) error {
	run.saveMu.Lock()
	defer run.saveMu.Unlock()
	ct.mu.Lock()
	c := proto.Clone(run.c).(*switchyardv1.Cutover)
	ct.mu.Unlock()
	if step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE && c.GetAbortRequested() {
		step = switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK
	}
	if step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP && c.GetAbortRequested() {
		step = switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK
	}
	if terminal(step) {
		setOutcomes(c, c.GetStep(), step)
	}
	now := timestamppb.Now()
	if n := len(c.History); n > 0 && c.History[n-1].Finished == nil {
		last := c.History[n-1]
		last.Finished = now
		if detail != "" {
			last.Detail = detail
		}
		if errMsg != "" {
			last.Error = errMsg
		}
	}
	if errMsg != "" && c.Error == "" {
		c.Error = errMsg
	}
	c.Step = step
	c.History = append(c.History, &switchyardv1.StepRecord{Step: step, Started: now})
	if terminal(step) {
		c.History[len(c.History)-1].Finished = now
	}
	c.Updated = now
	if err := ct.store.Put("cutovers", c.GetId(), c); err != nil {
		return fmt.Errorf("store cutover %s entering %s: %w", c.GetId(), StepName(step), err)
	}
	ct.publish(run, c)
	return nil
}

// setDetail updates the running step's detail (progress for watchers).
func (ct *Controller) setDetail(run *cutoverRun, detail string) {
	ct.update(run, func(c *switchyardv1.Cutover) {
		if n := len(c.History); n > 0 {
			c.History[n-1].Detail = detail
		}
	})
}

// prepareGroups asks the cutover's mirror, once, to ready the target's
// coordinators of its groups, bounded by the drain timeout; a failure is
// logged (SyncGroups retries for itself).
func (ct *Controller) prepareGroups(ctx context.Context, run *cutoverRun) {
	ct.mu.Lock()
	c := run.c
	ct.mu.Unlock()
	groups := ct.groupsOf(run)
	if terminal(c.GetStep()) || len(groups) == 0 {
		return
	}
	m := ct.mirrorOf(run)
	if m == nil || m.Mirror == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.GetSpec().GetPolicy().GetDrainTimeout().AsDuration())
	defer cancel()
	if err := m.Mirror.PrepareGroups(ctx, groups); err != nil && ct.ctx.Err() == nil {
		ct.log.Warn("target group coordinators not ready", zap.String("id", run.id), zap.Error(err))
	}
}

// errAborted: an operator asked for a rollback.
var errAborted = errors.New("aborted")

// drive runs a cutover's steps until it ends or the controller stops;
// while it does, it renews its sidecars' hold lease (renewLeases). An
// error before release rolls everything back; in a two-phase cutover, one
// while the groups drain, quiesce or sync rolls only their applications
// back (the producers stay on the target); any other error after release
// fails the cutover.
func (ct *Controller) drive(run *cutoverRun) {
	defer ct.wg.Done()
	leaseCtx, stopLeases := context.WithCancel(ct.ctx)
	leasesDone := make(chan struct{})
	go func() {
		defer close(leasesDone)
		ct.renewLeases(leaseCtx, run)
	}()
	defer func() {
		stopLeases()
		<-leasesDone
	}()
	prepared := make(chan struct{})
	go func() {
		defer close(prepared)
		ct.prepareGroups(leaseCtx, run)
	}()
	defer func() { <-prepared }() // after stopLeases, which ends its context
	for {
		if ct.ctx.Err() != nil {
			return // stopping: the stored step resumes or rolls back at the next start
		}
		ct.mu.Lock()
		c := run.c
		ct.mu.Unlock()
		step := c.GetStep()
		if terminal(step) {
			ct.log.Info("cutover ended", zap.String("id", c.GetId()), zap.String("step", StepName(step)), zap.String("error", c.GetError()))
			return
		}
		var (
			next   switchyardv1.CutoverStep
			detail string
			err    error
		)
		switch step {
		case switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT:
			err = ct.preflight(run)
			ct.mu.Lock()
			next = afterPreflight(run.c) // the preflight stored the coverage
			ct.mu.Unlock()
		case switchyardv1.CutoverStep_CUTOVER_STEP_GATE:
			next, detail, err = ct.gate(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN:
			next, detail, err = ct.drain(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS:
			next, detail, err = ct.syncGroups(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_FLIP:
			next, detail, err = ct.flip(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE:
			next, detail, err = ct.release(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY:
			next, detail, err = ct.verify(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK:
			next, detail, err = ct.rollback(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN:
			next, detail, err = ct.groupDrain(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE:
			next, detail, err = ct.quiesce(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP:
			next, detail, err = ct.groupFlip(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
			next, detail, err = ct.groupRelease(run)
		case switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
			next, detail, err = ct.groupsRollback(run)
		default:
			next, err = switchyardv1.CutoverStep_CUTOVER_STEP_FAILED, fmt.Errorf("unknown step %v", step)
		}
		if ct.ctx.Err() != nil {
			return
		}
		errMsg := ""
		if err != nil {
			errMsg = err.Error()
			if errors.Is(err, errAborted) {
				ct.mu.Lock()
				errMsg = run.c.GetError()
				ct.mu.Unlock()
			}
			switch {
			case step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
				step == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
				step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
				next = switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
			case groupsMayRollBack(c):
				// The producers are on the target for good; the groups'
				// applications never left the source.
				next = switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK
			default:
				next = switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK
			}
			if step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE && TwoPhase(c) {
				errMsg += "; " + ct.rerunHint(run, ct.passOf(run, 2))
			}
			ct.log.Warn("cutover step failed", zap.String("id", c.GetId()), zap.String("step", StepName(step)), zap.Error(err))
		}
		if err := ct.enter(run, next, detail, errMsg); err != nil {
			// The store is broken: stop here; nothing further is done on a
			// state that is not recorded.
			ct.log.Error("cutover stalled", zap.String("id", c.GetId()), zap.Error(err))
			return
		}
	}
}

func (ct *Controller) spec(run *cutoverRun) *switchyardv1.CutoverSpec {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return run.c.GetSpec()
}

// waitFor polls cond on every registry change (and at least every 100 ms)
// until it holds, the timeout passes, the cutover is aborted (when
// abortable) or the controller stops.
func (ct *Controller) waitFor(run *cutoverRun, timeout time.Duration, abortable bool, cond func() (bool, error)) error {
	return ct.poll(run, timeout, abortable, true, cond)
}

// poll is waitFor; onChange false polls every 100 ms only, for conditions
// that are costly to check (they ask a cluster).
func (ct *Controller) poll(run *cutoverRun, timeout time.Duration, abortable, onChange bool, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var changed <-chan struct{}
		if onChange {
			changed = ct.reg.Changed()
		}
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		var abort <-chan struct{}
		if abortable {
			abort = run.abort
		}
		select {
		case <-ct.ctx.Done():
			return ct.ctx.Err()
		case <-abort:
			return errAborted
		case <-deadline.C:
			return context.DeadlineExceeded
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitAcks waits until every one of the sidecars keys (of the cutover's
// selected sidecars) applied version v. The cutover's acknowledgements
// show the others as they were.
func (ct *Controller) waitAcks(run *cutoverRun, keys []string, v uint64, timeout time.Duration, abortable bool) (string, error) {
	var acks []*switchyardv1.SidecarAck
	err := ct.waitFor(run, timeout, abortable, func() (bool, error) {
		var all bool
		acks, all = ct.reg.Acks(keys, v)
		ct.update(run, func(c *switchyardv1.Cutover) { c.Sidecars = mergeAcks(run.keys, c.GetSidecars(), acks) })
		return all, nil
	})
	done := 0
	var missing []string
	for _, a := range acks {
		if a.GetConnected() && a.GetAppliedVersion() >= v && a.GetApplyError() == "" {
			done++
			continue
		}
		why := "not acknowledged"
		switch {
		case !a.GetConnected():
			why = "disconnected"
		case a.GetApplyError() != "":
			why = a.GetApplyError()
		}
		missing = append(missing, fmt.Sprintf("%s/%s (%s)", a.GetApp(), a.GetInstance(), why))
	}
	detail := fmt.Sprintf("%d/%d sidecars acknowledged version %d", done, len(acks), v)
	if errors.Is(err, context.DeadlineExceeded) {
		return detail, fmt.Errorf("%s within %v; missing: %s", detail, timeout, strings.Join(missing, ", "))
	}
	return detail, err
}

func (ct *Controller) mirrorOf(run *cutoverRun) *MirrorRef {
	return ct.mirrors[ct.spec(run).GetMirror()]
}

// topicsOf returns the cutover's topics: as given, or every topic the
// mirror copies.
func (ct *Controller) topicsOf(run *cutoverRun, st mirror.Status) []string {
	if ts := ct.spec(run).GetTopics(); len(ts) > 0 {
		return ts
	}
	set := map[string]bool{}
	for _, p := range st.Partitions {
		set[p.Topic] = true
	}
	return sortedNames(set)
}

func sortedNames(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// mirrorLag sums the records not yet copied over topics.
func mirrorLag(st mirror.Status, topics []string) (int64, []string) {
	var lag int64
	seen := map[string]bool{}
	for _, p := range st.Partitions {
		if slices.Contains(topics, p.Topic) {
			lag += p.LagRecords
			seen[p.Topic] = true
		}
	}
	var missing []string
	for _, t := range topics {
		if !seen[t] {
			missing = append(missing, t)
		}
	}
	return lag, missing
}

// ensureMirrored checks that the mirror m, whose status is st, copies
// every one of topics. Topics it does not know yet were created on the
// source since it last looked (Kafka Streams creates its internal topics
// at start, a producer may create its topic): it syncs its topics once
// rather than refuse until the next topic sync. It returns the mirror's
// status, fresh after a sync.
func ensureMirrored(ctx context.Context, m *MirrorRef, st mirror.Status, topics []string) (mirror.Status, error) {
	for _, t := range topics {
		if e, ok := st.TopicErrors[t]; ok {
			return st, fmt.Errorf("mirror %s does not copy topic %s: %s", m.Name, t, e)
		}
	}
	if _, missing := mirrorLag(st, topics); len(missing) > 0 {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := m.Mirror.RefreshTopics(ctx)
		cancel()
		if err != nil {
			return st, fmt.Errorf("mirror %s does not copy topics %v, and a topic sync failed: %w", m.Name, missing, err)
		}
		st = m.Mirror.Status()
		for _, t := range missing {
			if e, ok := st.TopicErrors[t]; ok {
				return st, fmt.Errorf("mirror %s does not copy topic %s: %s", m.Name, t, e)
			}
		}
		if _, missing = mirrorLag(st, topics); len(missing) > 0 {
			return st, fmt.Errorf("mirror %s does not copy topics %v (not on the source, or not selected by the mirror's topics policy?)", m.Name, missing)
		}
	}
	return st, nil
}

func (ct *Controller) preflight(run *cutoverRun) error {
	spec := ct.spec(run)
	keys := ct.reg.Select(spec.GetSelector())
	if len(keys) == 0 {
		return fmt.Errorf("no connected sidecar matches apps %v with labels %v", spec.GetSelector().GetApps(), spec.GetSelector().GetLabels())
	}
	run.keys = keys
	acks, _ := ct.reg.Acks(keys, 0)
	// What the applications do may have grown since the cutover was
	// created (a consumer joined, Kafka Streams created its topics).
	cov, err := ct.coverageFor(spec)
	if err != nil {
		return fmt.Errorf("coverage: %w", err)
	}
	ct.update(run, func(c *switchyardv1.Cutover) { c.Sidecars, c.Coverage = acks, cov })
	for _, k := range keys {
		st, _, connected := ct.reg.StatusApplied(k)
		if !connected || st == nil {
			return fmt.Errorf("sidecar %s has not reported its status", k)
		}
		if st.GetActiveCluster() != spec.GetSource() {
			return fmt.Errorf("sidecar %s runs on cluster %q, not on the source %q", k, st.GetActiveCluster(), spec.GetSource())
		}
	}
	m := ct.mirrorOf(run)
	st := m.Mirror.Status()
	if !st.Ready {
		return fmt.Errorf("mirror %s is not ready (last error %q)", m.Name, st.LastError)
	}
	topics := ct.topicsOf(run, st)
	// The topics the applications write and read must be mirrored even
	// when the spec names others: they are where the records and the
	// groups' positions are.
	topics = slices.Compact(slices.Sorted(slices.Values(slices.Concat(topics, coveredTopics(cov)))))
	if st, err = ensureMirrored(ct.ctx, m, st, topics); err != nil {
		return err
	}
	lag, _ := mirrorLag(st, topics)
	ct.update(run, func(c *switchyardv1.Cutover) { c.MirrorLag = lag })
	if max := spec.GetPolicy().GetMaxPreflightLag(); lag > max {
		return fmt.Errorf("mirror %s lags %d records over %v, more than policy.max_preflight_lag %d: let it catch up first", m.Name, lag, topics, max)
	}
	ct.setDetail(run, fmt.Sprintf("%d sidecars on %s; mirror %s lags %d records", len(keys), spec.GetSource(), m.Name, lag))
	return nil
}

// gate gates Produce on the sidecars of the first pass (all of them in a
// one-phase cutover; the producers' in a two-phase one).
func (ct *Controller) gate(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.firstPass(run)
	ct.update(run, func(c *switchyardv1.Cutover) { c.GatedAt = timestamppb.Now() })
	v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetSource(), ct.gateOf(spec))
	if err != nil {
		return 0, "", err
	}
	detail, err := ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), true)
	run.gateVersion = v
	return switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, detail, err
}

func (ct *Controller) gateOf(spec *switchyardv1.CutoverSpec) *gateSpec {
	g := &gateSpec{APIKeys: []int32{produceKey}, Mode: spec.GetPolicy().GetGateMode()}
	if g.Mode == "HOLD" {
		g.HoldBudget = spec.GetPolicy().GetHoldBudget().AsDuration()
	}
	return g
}

// flipGate is the gate in force while the sidecars switch. With consumer
// groups, Fetch is refused too, from the flip until the groups have
// rejoined on the target: a consumer that fetched with the position it had
// on the source would read the wrong records there (the offsets differ).
// A refused Fetch is answered empty (proxy/gate.go); the consumer's
// heartbeat tells it that it is no longer a member (proxy/members.go), it
// rejoins and reads its committed (translated) offsets.
//
// Under HOLD, Produce stays held through the flip (Fetch is a reject key
// of the same gate): a produce request parked at the gate is released onto
// the target, never answered with an error because the flip came. A
// sidecar too old for per-key modes is sent both keys refused instead
// (gateSpec.toProto).
func (ct *Controller) flipGate(spec *switchyardv1.CutoverSpec, groups []string) *gateSpec {
	g := ct.gateOf(spec)
	if len(groups) > 0 {
		if g.Mode == "HOLD" {
			g.RejectKeys = []int32{fetchKey}
		} else {
			g.APIKeys = append(g.APIKeys, fetchKey)
		}
	}
	return g
}

// leaseEvery is how often a cutover renews the hold lease of its sidecars
// for a hold budget: four times per budget, so a lease or two may be late
// or lost without a held request expiring, and at most every 50 ms.
func leaseEvery(budget time.Duration) time.Duration { return max(budget/4, 50*time.Millisecond) }

// renewLeases renews, until ctx ends, the hold lease of the cutover's
// sidecars while their desired state holds requests (Registry.Lease): a
// request parked by the cutover's HOLD gate does not expire while the
// cutover progresses — however long the drain, the group sync and the
// flip take — up to each sidecar's maxHold. Each lease is valid for the
// policy's hold budget: when the control plane stops (ctx ends with it)
// or dies, held requests expire a hold budget after the last lease at the
// latest. The cutover's driver runs it for as long as it drives.
func (ct *Controller) renewLeases(ctx context.Context, run *cutoverRun) {
	ct.mu.Lock()
	id, budget := run.c.GetId(), run.c.GetSpec().GetPolicy().GetHoldBudget().AsDuration()
	ct.mu.Unlock()
	if budget <= 0 {
		return
	}
	t := time.NewTicker(leaseEvery(budget))
	defer t.Stop()
	for {
		if !ct.leasesPaused.Load() {
			for _, rule := range ruleIDs(id) {
				ct.reg.Lease(rule, budget)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// drain waits until the first pass's sidecars have no Produce in flight
// and the mirror has copied what the source holds of the topics they
// write; in a one-phase cutover, also until the groups have committed the
// source's end. A two-phase cutover's producers wait for no group: its
// groups drain in their own phase, after the producers are released.
func (ct *Controller) drain(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.firstPass(run)
	deadline := time.Now().Add(spec.GetPolicy().GetDrainTimeout().AsDuration())
	// 1. Produce requests admitted before the gate are answered and the
	// transactions open then have ended: every sidecar reports, with the
	// gate applied, no Produce in flight (an open transaction counts as
	// one). The gate keeps new transactions from starting.
	busy, err := ct.waitNoProduce(run, sc.keys, run.gateVersion, deadline)
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "", fmt.Errorf("produce not drained after the drain timeout on %s", strings.Join(busy, ", "))
	}
	if err != nil {
		return 0, "", err
	}
	// 2. The mirror has copied everything the source holds for the topics.
	m := ct.mirrorOf(run)
	var topics []string
	if sc.phase == 1 {
		if topics, err = ct.phaseWrites(run, 1); err != nil {
			return 0, "", err
		}
	} else {
		topics = ct.topicsOf(run, m.Mirror.Status())
	}
	behind, err := ct.waitCaughtUp(run, m, topics, deadline)
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "", fmt.Errorf("mirror %s has not caught up on %s within the drain timeout", m.Name, behind)
	}
	if err != nil {
		return 0, "", err
	}
	if sc.phase == 1 {
		return switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, fmt.Sprintf("no produce in flight on %d producer sidecars; mirror %s copied %v completely",
			len(sc.keys), m.Name, topics), nil
	}
	// 3. The consumer groups have consumed and committed everything on the
	// source: their final offsets are known, and nothing they commit later
	// is lost.
	if groups := ct.groupsOf(run); len(groups) > 0 {
		behind, err = ct.waitGroupsDrained(run, m, groups, topics, deadline)
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, "", fmt.Errorf("consumer groups not drained within the drain timeout: %s", behind)
		}
		if err != nil {
			return 0, "", err
		}
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, fmt.Sprintf("no produce in flight; mirror %s copied %v completely; groups %v drained", m.Name, topics, ct.groupsOf(run)), nil
}

// waitNoProduce waits until every one of the sidecars keys reports, with
// the gate of registry version gateVersion applied, no Produce in flight —
// an open transaction counts as one —, until deadline or an abort; it
// returns those still busy.
func (ct *Controller) waitNoProduce(run *cutoverRun, keys []string, gateVersion uint64, deadline time.Time) ([]string, error) {
	return ct.waitReports(run, keys, gateVersion, "the gate", deadline, func(st *switchyardv1.ProxyStatus) string {
		if st.GetInFlightByApi()[produceKey] > 0 {
			return drainBusy(st)
		}
		return ""
	})
}

// waitReports waits until every one of the sidecars keys is connected and
// has reported, with registry version v (named what) applied, a status
// busy finds nothing in (it says what is left, "" for nothing), until
// deadline or an abort; it returns each sidecar still waited for, with
// why.
func (ct *Controller) waitReports(run *cutoverRun, keys []string, v uint64, what string, deadline time.Time,
	busy func(*switchyardv1.ProxyStatus) string) ([]string, error) {
	var left []string
	err := ct.waitFor(run, time.Until(deadline), true, func() (bool, error) {
		left = left[:0]
		for _, k := range keys {
			// The status of a report that acknowledges the version shows
			// the proxy after it applied it (a sidecar reads its applied
			// version before its status).
			st, applied, connected := ct.reg.StatusApplied(k)
			switch {
			case !connected:
				left = append(left, k+" (disconnected)")
			case st == nil || applied < v:
				left = append(left, k+" (no report since "+what+")")
			default:
				if b := busy(st); b != "" {
					left = append(left, k+" ("+b+")")
				}
			}
		}
		return len(left) == 0, nil
	})
	return left, err
}

// drainBusy says what a sidecar with Produce in flight waits for: open
// transactions (counted as one Produce and one EndTxn each) and produce
// requests.
func drainBusy(st *switchyardv1.ProxyStatus) string {
	inflight := st.GetInFlightByApi()
	produce, txns := inflight[produceKey], min(inflight[endTxnKey], inflight[produceKey])
	var parts []string
	if n := produce - txns; n > 0 {
		parts = append(parts, fmt.Sprintf("%d produce %s in flight", n, plural(n, "request", "requests")))
	}
	if txns > 0 {
		parts = append(parts, fmt.Sprintf("%d %s still open", txns, plural(txns, "transaction", "transactions")))
	}
	return strings.Join(parts, ", ")
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// syncGroups translates the groups' committed offsets to the target. In a
// two-phase cutover it first waits, like a drain, until the mirror has
// copied what the quiesced applications wrote on the source.
func (ct *Controller) syncGroups(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	next := switchyardv1.CutoverStep_CUTOVER_STEP_FLIP
	m := ct.mirrorOf(run)
	var caughtUp string
	if ct.twoPhase(run) {
		next = switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP
		topics, err := ct.phaseWrites(run, 2)
		if err != nil {
			return 0, "", err
		}
		behind, err := ct.waitCaughtUp(run, m, topics, time.Now().Add(spec.GetPolicy().GetDrainTimeout().AsDuration()))
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, "", fmt.Errorf("mirror %s has not caught up on %s within the drain timeout", m.Name, behind)
		}
		if err != nil {
			return 0, "", err
		}
		if len(topics) > 0 {
			caughtUp = fmt.Sprintf("mirror %s copied %v completely; ", m.Name, topics)
		}
	}
	groups := ct.groupsOf(run)
	if len(groups) == 0 {
		return next, caughtUp + "no consumer groups", nil
	}
	select {
	case <-run.abort:
		return 0, "", errAborted
	default:
	}
	ctx, cancel := context.WithTimeout(ct.ctx, spec.GetPolicy().GetDrainTimeout().AsDuration())
	defer cancel()
	// A group may have committed offsets the mirror has not copied yet:
	// in a topic whose writers the cutover does not move, the source's end
	// runs ahead of the mirror. The offsets are final; the mirror gets
	// there: sync again until it has, within the drain timeout.
	var (
		rep mirror.GroupSyncReport
		err error
	)
	perr := ct.poll(run, spec.GetPolicy().GetDrainTimeout().AsDuration(), true, false, func() (bool, error) {
		rep, err = m.Mirror.SyncGroups(ctx, groups)
		return err != nil || !errors.Is(rep.Err(), offsetmap.ErrBeyondMirrored), nil
	})
	if perr != nil && !errors.Is(perr, context.DeadlineExceeded) {
		return 0, "", perr // aborted, or the controller stops
	}
	var offsets []*switchyardv1.GroupOffset
	synced, skipped := 0, 0
	for _, g := range rep.Groups {
		for _, p := range g.Partitions {
			offsets = append(offsets, &switchyardv1.GroupOffset{Group: g.Group, Topic: p.Topic, Partition: p.Partition,
				Source: p.Source, Target: p.Target, Outcome: p.Outcome})
			if p.Outcome == mirror.OutcomeSkipped {
				skipped++ // would move the target group back, or not mirrored: not a sync
			} else {
				synced++
			}
		}
	}
	ct.update(run, func(c *switchyardv1.Cutover) { c.GroupOffsets = offsets })
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		return 0, "", fmt.Errorf("sync groups: %w", err)
	}
	detail := fmt.Sprintf("%s%d group partitions synced exactly", caughtUp, synced)
	if skipped > 0 {
		detail += fmt.Sprintf(", %d skipped (the target group is ahead, or the topic is not mirrored)", skipped)
	}
	return next, detail, nil
}

func (ct *Controller) flip(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	sc := ct.firstPass(run)
	var groups []string
	if sc.phase == 0 {
		groups = ct.groupsOf(run)
	}
	v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetTarget(), ct.flipGate(spec, groups))
	if err != nil {
		return 0, "", err
	}
	detail, err := ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), true)
	return switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, detail, err
}

// release lifts the gates on the target. Entering this step is the point
// of no return: it is stored before any sidecar hears of it, and from here
// on the cutover goes forward only — for the producers of a two-phase
// cutover, whose groups then move in their own phase (GROUP_DRAIN).
func (ct *Controller) release(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	sc := ct.firstPass(run)
	var groups []string
	if sc.phase == 0 {
		groups = ct.groupsOf(run)
	}
	detail, err := ct.releaseOnTarget(run, sc, groups, func(now time.Time) {
		ct.update(run, func(c *switchyardv1.Cutover) {
			c.ReleasedAt = timestamppb.New(now)
			if c.GatedAt != nil {
				c.BlockWindow = durationpb.New(now.Sub(c.GatedAt.AsTime()))
			}
		})
	})
	if err != nil {
		return 0, "", err
	}
	if sc.phase == 1 {
		return switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, "producers released: " + detail, nil
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY, detail, nil
}

func (ct *Controller) verify(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	var wrong []string
	err := ct.waitFor(run, spec.GetPolicy().GetAckTimeout().AsDuration(), false, func() (bool, error) {
		wrong = wrong[:0]
		for _, k := range run.keys {
			st, _, connected := ct.reg.StatusApplied(k)
			if !connected || st.GetActiveCluster() != spec.GetTarget() || st.GetGate() != nil {
				wrong = append(wrong, k)
			}
		}
		return len(wrong) == 0, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "", fmt.Errorf("sidecars %v do not report running ungated on %s", wrong, spec.GetTarget())
	}
	if err != nil {
		return 0, "", err
	}
	m := ct.mirrorOf(run)
	topics := verifyTopics(ct.coverage(run), spec)
	if topics == nil {
		topics = ct.topicsOf(run, m.Mirror.Status())
	}
	// After a restart the mirror restores its offset maps before it can
	// answer: until it is ready, or while a cluster does not answer, the
	// question is open, not answered no.
	var (
		caughtUp bool
		behind   string
	)
	err = ct.poll(run, spec.GetPolicy().GetDrainTimeout().AsDuration(), false, false, func() (bool, error) {
		if st := m.Mirror.Status(); !st.Ready {
			behind = fmt.Sprintf("mirror not ready (%s)", st.LastError)
			return false, nil
		}
		ctx, cancel := context.WithTimeout(ct.ctx, 10*time.Second)
		defer cancel()
		var err error
		if caughtUp, behind, err = m.Mirror.CaughtUp(ctx, topics...); err != nil {
			behind = err.Error()
			return false, nil
		}
		return true, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "", fmt.Errorf("mirror %s: cannot tell whether the source grew after the flip: %s", m.Name, behind)
	}
	if err != nil {
		return 0, "", err
	}
	if !caughtUp {
		return 0, "", fmt.Errorf("mirror %s: the source grew after the flip (%s behind): a client bypasses the sidecars", m.Name, behind)
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_DONE, fmt.Sprintf("%d sidecars run on %s; the source received nothing since the drain", len(run.keys), spec.GetTarget()), nil
}

// verifyTopics returns the topics on which verify proves that the source
// received nothing after the flip: those the moved applications write,
// and those the spec names that none of them reads. A topic they only
// read may have writers the cutover does not move (a consumer moved
// before its producers), whose records the mirror goes on copying. Nil
// without coverage (every mirrored topic is checked then).
func verifyTopics(cov *switchyardv1.CutoverCoverage, spec *switchyardv1.CutoverSpec) []string {
	if len(cov.GetUnits()) == 0 {
		return nil
	}
	set := unitNames(cov.GetUnits(), (*switchyardv1.CutoverUnit).GetWrites)
	read := unitNames(cov.GetUnits(), (*switchyardv1.CutoverUnit).GetReads)
	for _, t := range spec.GetTopics() {
		if !read[t] {
			set[t] = true
		}
	}
	return sortedNames(set)
}

// rollback returns the sidecars to the source without a gate. Switch and
// gate removal arrive in one desired state; a sidecar switches first and
// lifts the gate after, so no client reaches the target ungated.
func (ct *Controller) rollback(run *cutoverRun) (switchyardv1.CutoverStep, string, error) {
	spec := ct.spec(run)
	// The registry's rules, stored before any sidecar heard of them, are
	// the proof of what sidecars may have applied (GatedAt is only stored
	// with the step after gate).
	var details []string
	for _, sc := range ct.passes(run) {
		if !ct.reg.HasRule(sc.rule) {
			continue
		}
		v, err := ct.reg.SetRule(sc.rule, sc.sel, spec.GetSource(), nil)
		if err != nil {
			return 0, "", err
		}
		detail, err := ct.waitAcks(run, sc.keys, v, spec.GetPolicy().GetAckTimeout().AsDuration(), false)
		if err != nil {
			detail += "; the others apply the rollback when they reconnect"
		}
		details = append(details, detail)
	}
	if len(details) == 0 {
		return switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, "nothing to undo: no sidecar was gated", nil
	}
	return switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK, strings.Join(details, "; "), nil
}
