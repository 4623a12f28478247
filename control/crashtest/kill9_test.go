//go:build unix

package crashtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

var (
	flagSeed   = flag.Uint64("crashtest.seed", 0, "seed of the plans (gate mode, pinned sidecar, kill moment); 0 picks one (it is logged)")
	flagSteps  = flag.String("crashtest.steps", "", "comma-separated transitions to run (default all): "+strings.Join(transitionNames(), ","))
	flagRounds = flag.Int("crashtest.rounds", 1, "how many times each transition is run, each with its own plan")
	flagBin    = flag.String("crashtest.bin", "", "switchyard binary to kill; empty builds ./cmd/switchyard of this module")
)

const (
	partitions  = 4
	token       = "crashtest-token"
	app         = "orders"  // every sidecar's application; in a two-phase run, the producers'
	groupApp    = "billing" // the consumer group's application in a two-phase run
	nProducers  = 3
	nConsumers  = 2
	warmRecords = 50 // per producer, and read by the group, before the cutover
	moreRecords = 30 // per producer, acknowledged after the cutover ended
	// read by each member of the group before the cutover
	warmMemberRecords = 10

	scenarioTimeout = 4 * time.Minute  // one transition, everything included
	setupTimeout    = 60 * time.Second // sidecars connected, mirror ready, first records
	stepTimeout     = 60 * time.Second // from the cutover's start to the step to kill in
	endTimeout      = 90 * time.Second // from the restart to the cutover's end
	settleTimeout   = 30 * time.Second // sidecars on the outcome's cluster, producers producing there
	readTimeout     = 60 * time.Second // the group read everything
	maxKillDelay    = 250 * time.Millisecond
	pinHitTimeout   = 15 * time.Second

	// Preflight holds on nothing: it is attempted up to preflightAttempts
	// times, each killed at a log-uniform moment after CreateCutover is
	// sent (or when it returns), until one kill lands with the store
	// holding preflight.
	preflightAttempts = 12
	preKillMin        = 200 * time.Microsecond
	preKillMax        = 30 * time.Millisecond
)

// transition is a step a cutover enters, to kill the control plane in.
type transition struct {
	name string
	step switchyardv1.CutoverStep
	// twoPhase: the producers and the consumer group are two
	// applications, so the cutover moves them in two phases (producers
	// first, then the group: control/phases.go); otherwise they are one
	// application that produces and consumes, moved in the groups' phase
	// alone (no producer phase; its Produce held from the group drain on).
	twoPhase bool
}

var transitions = []transition{
	// One application: the groups' phase alone.
	{"preflight", switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT, false},
	{"group-drain", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, false},
	{"quiesce", switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, false},
	{"sync-groups", switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, false},
	{"group-flip", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, false},
	{"group-release", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, false},
	{"verify", switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY, false},
	{"groups-rolling-back", switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK, false},
	// Two phases: the producers' (gate to release), then the group's.
	{"2p-gate", switchyardv1.CutoverStep_CUTOVER_STEP_GATE, true},
	{"2p-drain", switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, true},
	{"2p-flip", switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, true},
	{"2p-release", switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, true},
	{"2p-rolling-back", switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, true},
	{"2p-group-drain", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, true},
	{"2p-quiesce", switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, true},
	{"2p-sync-groups", switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, true},
	{"2p-group-flip", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, true},
	{"2p-group-release", switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, true},
	{"2p-verify", switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY, true},
	{"2p-groups-rolling-back", switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK, true},
}

// groupPhase reports whether a transition's step belongs to the group's
// phase (it holds a group member's sidecar rather than a producer's).
func (tr transition) groupPhase() bool {
	switch tr.step {
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE,
		switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
		return true
	}
	return false
}

func transitionNames() []string {
	var out []string
	for _, tr := range transitions {
		out = append(out, tr.name)
	}
	return out
}

// TestControlPlaneSurvivesKill9 kills `switchyard control` with SIGKILL in
// every step of a cutover under load, restarts it on the same store and
// port, and checks the outcome, where every sidecar ends, every
// acknowledged record, and every switch and gate change the sidecars made.
// See the package documentation.
func TestControlPlaneSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds switchyard and kills the control plane in every cutover step; skipped with -short")
	}
	began := time.Now()
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	selected := map[string]bool{}
	for _, s := range strings.Split(*flagSteps, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !slices.Contains(transitionNames(), s) {
				t.Fatalf("-crashtest.steps: unknown transition %q (known: %s)", s, strings.Join(transitionNames(), ","))
			}
			selected[s] = true
		}
	}
	t.Logf("backend %s, seed %d (replay the plans: go test ./control/crashtest -run TestControlPlaneSurvivesKill9 -v -args -crashtest.seed=%d)",
		kafkatest.Backend(), seed, seed)
	bin := buildSwitchyard(t)
	t.Logf("switchyard built in %v", time.Since(began).Round(time.Millisecond))

	goroutinesBefore := runtime.NumGoroutine()
	var (
		mu      sync.Mutex
		summary []string
	)
	t.Run("transitions", func(t *testing.T) {
		for round := range max(1, *flagRounds) {
			for i, tr := range transitions {
				if len(selected) > 0 && !selected[tr.name] {
					continue
				}
				name := tr.name
				if *flagRounds > 1 {
					name = fmt.Sprintf("%s#%d", tr.name, round)
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					line := runTransition(t, bin, tr, round, uint64(round*len(transitions)+i), seed)
					mu.Lock()
					summary = append(summary, fmt.Sprintf("%-16s %s", name, line))
					mu.Unlock()
				})
			}
		}
	})
	slices.Sort(summary)
	for _, s := range summary {
		t.Log(s)
	}
	checkGoroutines(t, goroutinesBefore)
	t.Logf("%d transitions in %v (seed %d)", len(summary), time.Since(began).Round(time.Millisecond), seed)
}

// checkGoroutines fails when goroutines the subtests started are still
// running once they all ended (their cleanups included).
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines still running after every transition ended, %d before they began:\n%s", runtime.NumGoroutine(), before, buf)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// plan is what a transition's run does, drawn from the seed.
type plan struct {
	tr       transition
	seed     uint64
	gateMode string                   // the cutover's producer gate: HOLD or REJECT
	atEntry  bool                     // kill as soon as the watch shows the step, stored or not yet
	delay    time.Duration            // otherwise: kill this long after the store holds the step
	pinned   int                      // the sidecar a sidecar pin holds (0-2 producers, 3-4 consumers)
	before   bool                     // it holds the call before it reaches the proxy (else after, unacknowledged)
	drainBy  string                   // drain waits on "group" (members paused) or "mirror" (source ends unreadable)
	abortAt  switchyardv1.CutoverStep // rolling-back: the step aborted in (DRAIN or FLIP)
	// preflight: each attempt's kill, this long after CreateCutover is
	// sent (negative: when it returns)
	preKills []time.Duration
	// release, verify: the restarted mirror's start (fencing the killed
	// instance's transactional producer) is held this long (0: not held)
	mirrorHold time.Duration
}

// drawPlan draws a transition's plan. In the first round every kill waits
// until the store holds the step, so that each step is covered; later
// rounds also kill as soon as the watch shows the step, which can be
// before it is stored.
func drawPlan(rng *rand.Rand, tr transition, round int, seed uint64) plan {
	p := plan{tr: tr, seed: seed, gateMode: []string{"HOLD", "REJECT"}[rng.IntN(2)],
		atEntry: rng.Float64() < 0.3 && round > 0, delay: time.Duration(rng.Int64N(int64(maxKillDelay))),
		pinned: rng.IntN(nProducers + nConsumers), before: rng.IntN(2) == 0,
		drainBy: []string{"group", "mirror"}[rng.IntN(2)],
		abortAt: []switchyardv1.CutoverStep{switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP}[rng.IntN(2)]}
	if (tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE || tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY ||
		tr.groupPhase() && tr.step != switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK) && rng.IntN(2) == 0 {
		p.mirrorHold = time.Duration(1+rng.Int64N(2000)) * time.Millisecond
	}
	if tr.twoPhase || tr.groupPhase() {
		// The step's pass holds one of its own sidecars: a producer's in
		// the producers' phase, a group member's in the group's. The
		// producers' drain waits for no group: only the mirror can hold
		// it; the group's drain waits for the group.
		p.drainBy = "mirror"
		p.pinned %= nProducers
		if tr.groupPhase() {
			p.pinned = nProducers + p.pinned%nConsumers
			p.drainBy = "group"
		}
		if tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK {
			p.abortAt = switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE
		}
	}
	if tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT {
		p.atEntry = true // nothing in preflight waits to be held
		for range preflightAttempts {
			d := time.Duration(-1)
			if rng.IntN(3) > 0 {
				lo, hi := math.Log(float64(preKillMin)), math.Log(float64(preKillMax))
				d = time.Duration(math.Exp(lo + rng.Float64()*(hi-lo)))
			}
			p.preKills = append(p.preKills, d)
		}
	}
	return p
}

func (p plan) String() string {
	var s []string
	s = append(s, "gate "+p.gateMode)
	switch p.tr.step {
	case switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT:
		var ks []string
		for _, d := range p.preKills {
			if d < 0 {
				ks = append(ks, "at its return")
			} else {
				ks = append(ks, d.Round(10*time.Microsecond).String())
			}
		}
		s = append(s, "up to "+fmt.Sprint(len(ks))+" cutovers, each killed after CreateCutover is sent: "+strings.Join(ks, ", "))
	case switchyardv1.CutoverStep_CUTOVER_STEP_GATE, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE,
		switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
		s = append(s, fmt.Sprintf("sidecar %d held %s applying", p.pinned, map[bool]string{true: "before", false: "after"}[p.before]))
	case switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN:
		s = append(s, "drain waits on the "+p.drainBy)
	case switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS:
		s = append(s, "group offsets commit on the target held")
	case switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY:
		s = append(s, "source end offsets held from the last step that reads them on")
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
		s = append(s, fmt.Sprintf("aborted in quiesce, sidecar %d held %s applying the quiesce gate", p.pinned, map[bool]string{true: "before", false: "after"}[p.before]))
	case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK:
		if p.abortAt == switchyardv1.CutoverStep_CUTOVER_STEP_FLIP {
			s = append(s, fmt.Sprintf("aborted in flip, sidecar %d held %s switching", p.pinned, map[bool]string{true: "before", false: "after"}[p.before]))
		} else {
			s = append(s, fmt.Sprintf("aborted in drain (waiting on the %s), sidecar %d held %s lifting the gate", p.drainBy, p.pinned,
				map[bool]string{true: "before", false: "after"}[p.before]))
		}
	}
	if p.mirrorHold > 0 {
		s = append(s, fmt.Sprintf("the restarted mirror's start held %v", p.mirrorHold))
	}
	if p.tr.step != switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT {
		if p.atEntry {
			s = append(s, "killed as the watch shows the step")
		} else {
			s = append(s, fmt.Sprintf("killed %v after the step is stored", p.delay.Round(time.Millisecond)))
		}
	}
	return strings.Join(s, "; ")
}

// scenario is one transition's run.
type scenario struct {
	t   *testing.T
	pl  plan
	ctx context.Context

	source, target     *kafkatest.Cluster
	relaySrc, relayDst *proxytest.Handle // the control plane's way to the clusters
	topic, group       string
	cp                 *controlPlane
	api                switchyardv1.ControlServiceClient
	sidecars           []*sidecar
	producers          []*producer
	members            *group
	stopProducing      func()
	stopConsuming      func()

	id        string
	seen      []switchyardv1.CutoverStep // through the watch, before the kill
	stored    *switchyardv1.Cutover      // in the store after the kill
	inStepFor time.Duration              // from the watch showing the step to the kill
	killed    time.Time
	abortPin  *pin // held when the abort is asked for (the sidecar's ack then holds the rollback)
	// readsAtCreate: how many records the group had read when the
	// (first) cutover was created
	readsAtCreate int
	verifyHeld    bool
	abortedAt     time.Time
	phases        []string // how long the checks took, for the summary
	lastMark      time.Time
	eventsFrom    []int    // per sidecar: its first event since this cutover was created
	landed        []string // preflight: where each attempt's kill landed
}

// checkRouting checks each sidecar's switches and gate changes since the
// cutover was created against its stored history.
func (sc *scenario) checkRouting(final *switchyardv1.Cutover, outcome switchyardv1.CutoverStep) {
	for i, s := range sc.sidecars {
		from := 0
		if i < len(sc.eventsFrom) {
			from = sc.eventsFrom[i]
		}
		pass := "group" // one application: the groups' phase alone
		if sc.pl.tr.twoPhase {
			pass = map[bool]string{true: "group", false: "producers"}[sc.appOf(s) == groupApp]
		}
		for _, v := range routingViolations(s.rec.history()[from:], final, sc.homeOf(s, outcome), pass) {
			sc.errorf("sidecar %s: %s", s.name, v)
		}
	}
}

// mark notes how long the phase that ends now took.
func (sc *scenario) mark(phase string) {
	now := time.Now()
	sc.phases = append(sc.phases, fmt.Sprintf("%s %v", phase, now.Sub(sc.lastMark).Round(time.Millisecond)))
	sc.lastMark = now
}

func (sc *scenario) tag() string {
	return fmt.Sprintf("[%s, seed %d]", sc.t.Name()[strings.LastIndex(sc.t.Name(), "/")+1:], sc.pl.seed)
}

func (sc *scenario) errorf(format string, args ...any) {
	sc.t.Helper()
	sc.t.Errorf(sc.tag()+" "+format, args...)
}

func (sc *scenario) fatalf(format string, args ...any) {
	sc.t.Helper()
	sc.t.Fatalf(sc.tag()+" "+format, args...)
}

func (sc *scenario) authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// runTransition runs one cutover, kills the control plane in the
// transition's step, restarts it and checks the invariants. It returns a
// summary line.
func runTransition(t *testing.T, bin string, tr transition, round int, idx, seed uint64) string {
	began := time.Now()
	pl := drawPlan(rand.New(rand.NewPCG(seed, idx+1)), tr, round, seed)
	sc := setUp(t, bin, pl)
	t.Logf("%s plan: %v", sc.tag(), pl)
	ready := time.Now()

	var final *switchyardv1.Cutover
	sc.readsAtCreate = len(sc.members.snapshot())
	if tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT {
		final = sc.preflightAttempts()
	} else {
		sc.armBeforeCreate()
		sc.create()
		sc.killInStep()
		sc.letGo()
		sc.holdMirrorStart()
		sc.cp.start(t)
		final = sc.awaitEnd()
	}
	ended := time.Now()
	sc.lastMark = ended
	var outcome switchyardv1.CutoverStep
	if tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT {
		outcome = final.GetStep() // each attempt's outcome was checked
		if !terminal(outcome) || outcome == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED {
			outcome = expected(sc.stored, tr.twoPhase)
		}
	} else {
		outcome = sc.checkOutcome(final)
	}
	sc.checkAfter(final, outcome)
	return fmt.Sprintf("killed in %-12s (store: %s, %v into the step) -> %-11s restart to end %5v, run %5v (setup %v, cutover to kill %v; %s)%s",
		stepName(sc.lastSeen()), stepName(sc.stored.GetStep()), sc.inStepFor.Round(time.Millisecond), stepName(final.GetStep()),
		ended.Sub(sc.killed).Round(time.Millisecond), time.Since(began).Round(time.Millisecond), ready.Sub(began).Round(time.Millisecond),
		sc.killed.Sub(ready).Round(time.Millisecond), strings.Join(sc.phases, ", "), map[bool]string{true: " FAILED", false: ""}[t.Failed()])
}

func stepName(s switchyardv1.CutoverStep) string {
	if s == switchyardv1.CutoverStep_CUTOVER_STEP_UNSPECIFIED {
		return "(none)"
	}
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s.String(), "CUTOVER_STEP_"), "_", "-"))
}

func terminal(s switchyardv1.CutoverStep) bool {
	return s == switchyardv1.CutoverStep_CUTOVER_STEP_DONE || s == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK ||
		s == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
}

func (sc *scenario) lastSeen() switchyardv1.CutoverStep {
	if len(sc.seen) == 0 {
		return switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT
	}
	return sc.seen[len(sc.seen)-1]
}

// setUp starts the clusters, the control plane with its mirror, the
// sidecars, the producers and the consumer group, and waits until records
// flow through all of them.
func setUp(t *testing.T, bin string, pl plan) *scenario {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	t.Cleanup(cancel)
	sc := &scenario{t: t, pl: pl, ctx: ctx, members: &group{}}
	sc.source, sc.target = kafkatest.Pair(t)
	sc.topic = kafkatest.Topic(t, "orders")
	sc.group = kafkatest.Topic(t, "billing")
	sc.source.CreateTopic(t, sc.topic, partitions)
	mirrorName := kafkatest.Topic(t, "crashtest")
	if kafkatest.Backend() == kafkatest.BackendReal {
		t.Cleanup(func() { sc.deleteIfPassed(mirrorName) })
	}

	// The control plane reaches each cluster through a proxy of its own,
	// which the test gates to hold a step.
	holdLong := func(c *proxy.Config) { c.HoldBudget, c.MaxHold = time.Minute, time.Minute }
	sc.relaySrc = proxytest.Start(t, []*kafkatest.Cluster{sc.source}, holdLong)
	sc.relayDst = proxytest.Start(t, []*kafkatest.Cluster{sc.target}, holdLong)
	mc := mirror.DefaultConfig()
	mc.Name = mirrorName
	mc.SourceBootstrap, mc.TargetBootstrap = []string{sc.relaySrc.Addr().String()}, []string{sc.relayDst.Addr().String()}
	mc.Topics = topics.Policy{Include: []string{regexp.QuoteMeta(sc.topic)}}
	mc.TxnMaxInterval = 100 * time.Millisecond
	mc.TopicSyncInterval = 500 * time.Millisecond
	mc.RetryBackoff = 50 * time.Millisecond
	mc.RetryBackoffMax = time.Second
	sc.cp = newControlPlane(t, bin, token, []clusterYAML{
		{Name: "source", Bootstrap: mc.SourceBootstrap}, {Name: "target", Bootstrap: mc.TargetBootstrap},
	}, mirrorYAML{Config: mc, Source: "source", Target: "target"})
	sc.cp.start(t)
	conn, err := grpc.NewClient(sc.cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6,
			Jitter: 0.2, MaxDelay: 500 * time.Millisecond}, MinConnectTimeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sc.api = switchyardv1.NewControlServiceClient(conn)

	// Five sidecars following it: their proxies first, so that their
	// control clients, stopped by the cleanup registered after, stop
	// before the proxies do.
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	for i := range nProducers + nConsumers {
		role, name := "producer", fmt.Sprintf("producer-%d", i)
		if i >= nProducers {
			role, name = "consumer", fmt.Sprintf("consumer-%d", i-nProducers)
		}
		h := proxytest.Start(t, []*kafkatest.Cluster{sc.source, sc.target})
		sc.sidecars = append(sc.sidecars, &sidecar{name: name, role: role, h: h, rec: &recorder{p: h.Proxy}})
	}
	sctx, stopSidecars := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	t.Cleanup(func() {
		for _, s := range sc.sidecars {
			s.rec.letAll()
		}
		stopSidecars()
		swg.Wait()
	})
	for _, s := range sc.sidecars {
		cfg := controlclient.DefaultConfig()
		cfg.Address, cfg.App, cfg.Instance, cfg.Token = sc.cp.addr, sc.appOf(s), s.name, token
		cfg.Labels = map[string]string{"role": s.role}
		cfg.StatusInterval = 100 * time.Millisecond
		cfg.MaxBackoff = 500 * time.Millisecond
		cc, err := controlclient.New(cfg, s.rec, s.h.Registry, log.Named(s.name))
		if err != nil {
			t.Fatal(err)
		}
		s.cc = cc
		swg.Add(1)
		go func() { defer swg.Done(); _ = cc.Run(sctx) }()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range sc.sidecars {
				t.Logf("%s %s: %v; switches and gates applied:\n%s", sc.tag(), s.name, s.h.Status().ActiveCluster, eventsString(s.rec.history()))
			}
		}
	})
	sc.waitSidecars()
	sc.waitUntil("the mirror copies the topic", setupTimeout, func() (bool, string) {
		r, err := sc.api.ListMirrors(ctx, &switchyardv1.ListMirrorsRequest{})
		for _, m := range r.GetMirrors() {
			n := 0
			for _, p := range m.GetPartitions() {
				if p.GetTopic() == sc.topic {
					n++
				}
			}
			if m.GetName() == mirrorName {
				return m.GetReady() && n == partitions && m.GetTopicErrors()[sc.topic] == "",
					fmt.Sprintf("ready %v, %d partitions, topic error %q, last error %q", m.GetReady(), n, m.GetTopicErrors()[sc.topic], m.GetLastError())
			}
		}
		return false, fmt.Sprintf("mirror not listed (%v)", err)
	})

	// Producers and the consumer group, through the sidecars.
	var clients []*kgo.Client
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
		return cl
	}
	for i := range nProducers {
		sc.producers = append(sc.producers, newProducer(i, newClient(kgo.SeedBrokers(sc.sidecars[i].addr()))))
	}
	var members []*kgo.Client
	for i := range nConsumers {
		logs := &memLog{}
		members = append(members, newClient(kgo.SeedBrokers(sc.sidecars[nProducers+i].addr()),
			kgo.ConsumerGroup(sc.group), kgo.ConsumeTopics(sc.topic), kgo.AutoCommitInterval(100*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithLogger(kgo.BasicLogger(logs, kgo.LogLevelInfo, nil))))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s consumer group member %d (through consumer-%d), its client's log:\n%s", sc.tag(), i, i, logs)
			}
		})
	}
	pctx, stopP := context.WithCancel(context.Background())
	cctx, stopC := context.WithCancel(context.Background())
	var pwg, cwg sync.WaitGroup
	sc.stopProducing = sync.OnceFunc(func() { stopP(); pwg.Wait() })
	sc.stopConsuming = sync.OnceFunc(func() { sc.members.unpause(); stopC(); cwg.Wait() })
	t.Cleanup(func() {
		sc.stopProducing()
		sc.stopConsuming()
		for _, cl := range clients {
			cl.Close()
		}
	})
	for _, p := range sc.producers {
		pwg.Add(1)
		go func() { defer pwg.Done(); p.run(pctx, sc.topic) }()
	}
	for i, cl := range members {
		cwg.Add(1)
		go func() { defer cwg.Done(); sc.members.run(cctx, i, cl) }()
	}
	// Every member reads, so the group has settled (the first member
	// took every partition, the second took some from it: records the
	// first had read and not committed may be read twice then, before the
	// cutover).
	sc.waitUntil("records produced and consumed through the sidecars by every member", setupTimeout, func() (bool, string) {
		var counts []int
		ok := true
		for _, p := range sc.producers {
			counts = append(counts, p.count())
			ok = ok && p.count() >= warmRecords
		}
		read := len(sc.members.snapshot())
		byMember := make([]int, nConsumers)
		for _, c := range sc.members.snapshot() {
			byMember[c.member]++
		}
		ok = ok && read >= warmRecords && slices.Min(byMember) >= warmMemberRecords
		return ok, fmt.Sprintf("acknowledged %v, read %d (by member %v)", counts, read, byMember)
	})
	sc.waitUsage()
	return sc
}

// waitSidecars waits until the control plane serves and every sidecar
// reports to it.
func (sc *scenario) waitSidecars() {
	sc.t.Helper()
	sc.waitUntil("the control plane serves and the five sidecars report to it", setupTimeout, func() (bool, string) {
		r, err := sc.api.ListSidecars(sc.ctx, &switchyardv1.ListSidecarsRequest{})
		n := 0
		for _, s := range r.GetSidecars() {
			if s.GetConnected() && s.GetStatus() != nil {
				n++
			}
		}
		return err == nil && n == len(sc.sidecars), fmt.Sprintf("%d connected (%v)", n, err)
	})
}

// appOf is the application a sidecar reports to the control plane.
func (sc *scenario) appOf(s *sidecar) string {
	if sc.pl.tr.twoPhase && s.role == "consumer" {
		return groupApp
	}
	return app
}

// apps are the applications the cutover selects.
func (sc *scenario) apps() []string {
	if sc.pl.tr.twoPhase {
		return []string{app, groupApp}
	}
	return []string{app}
}

// waitUsage waits until the control plane has heard from the sidecars
// what their clients do — the producers' produce to the topic, the
// members' group — so that a cutover computes its two phases from it.
func (sc *scenario) waitUsage() {
	sc.t.Helper()
	sc.waitUntil("the sidecars report their clients' topics and group", setupTimeout, func() (bool, string) {
		r, err := sc.api.ListSidecars(sc.ctx, &switchyardv1.ListSidecarsRequest{})
		var missing []string
		for _, s := range sc.sidecars {
			var u *switchyardv1.Usage
			for _, x := range r.GetSidecars() {
				if x.GetIdentity().GetApp() == sc.appOf(s) && x.GetIdentity().GetInstance() == s.name {
					u = x.GetStatus().GetUsage()
				}
			}
			ok := false
			if s.role == "producer" {
				ok = slices.ContainsFunc(u.GetTopics(), func(t *switchyardv1.TopicUsage) bool { return t.GetTopic() == sc.topic && t.GetProduced() })
			} else {
				ok = slices.ContainsFunc(u.GetGroups(), func(g *switchyardv1.GroupUsage) bool { return g.GetGroup() == sc.group })
			}
			if !ok {
				missing = append(missing, s.name)
			}
		}
		return err == nil && len(missing) == 0, fmt.Sprintf("not yet reported by %v (%v)", missing, err)
	})
}

// waitUntil polls cond until it holds; it fails the test after timeout with
// cond's last word.
func (sc *scenario) waitUntil(what string, timeout time.Duration, cond func() (bool, string)) {
	sc.t.Helper()
	if msg, ok := sc.poll(timeout, cond); !ok {
		sc.fatalf("%s: not within %v: %s", what, timeout, msg)
	}
}

func (sc *scenario) poll(timeout time.Duration, cond func() (bool, string)) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ok, msg := cond()
		if ok {
			return msg, true
		}
		select {
		case <-sc.ctx.Done():
			return msg + " (scenario timeout)", false
		case <-deadline.C:
			return msg, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// armBeforeCreate sets up what holds the step to kill in, where it must be
// in place before the cutover starts.
func (sc *scenario) armBeforeCreate() {
	pl := sc.pl
	pinned := sc.sidecars[pl.pinned].rec
	drainHold := func() {
		if pl.drainBy == "group" {
			// The members stop polling, so the group stops committing:
			// once more records were acknowledged after their last poll,
			// it is not drained while they are paused.
			sc.members.pause()
			sc.waitUntil("the group's members stop polling", setupTimeout, func() (bool, string) {
				n := sc.members.parkedMembers()
				return n == nConsumers, fmt.Sprintf("%d of %d stopped", n, nConsumers)
			})
			at := map[int]int{}
			for _, p := range sc.producers {
				at[p.id] = p.count()
			}
			sc.waitUntil("records acknowledged after the members' last poll", setupTimeout, func() (bool, string) {
				var got []int
				ok := true
				for _, p := range sc.producers {
					got = append(got, p.count()-at[p.id])
					ok = ok && p.count() > at[p.id]
				}
				return ok, fmt.Sprint(got)
			})
			return
		}
		// The mirror cannot learn the source's end offsets: CaughtUp waits.
		if err := sc.relaySrc.SetGate(proxy.Gate{APIKeys: []int16{keyListOffsets}, Mode: proxy.GateHold}); err != nil {
			sc.fatalf("hold ListOffsets on the control plane's source: %v", err)
		}
	}
	switch pl.tr.step {
	case switchyardv1.CutoverStep_CUTOVER_STEP_GATE:
		pinned.arm("gate", pl.before, putsProduce)
	case switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN:
		drainHold()
	case switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS:
		if err := sc.relayDst.SetGate(proxy.Gate{APIKeys: []int16{keyOffsetCommit}, Mode: proxy.GateHold}); err != nil {
			sc.fatalf("hold OffsetCommit on the control plane's target: %v", err)
		}
	case switchyardv1.CutoverStep_CUTOVER_STEP_FLIP:
		pinned.arm("flip", pl.before, switchesTo("target"))
	case switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE:
		pinned.arm("release", pl.before, liftsProduce("target"))
	case switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK:
		if pl.abortAt == switchyardv1.CutoverStep_CUTOVER_STEP_FLIP {
			sc.abortPin = pinned.arm("flip", pl.before, switchesTo("target"))
		} else {
			drainHold()
			pinned.arm("rollback", pl.before, liftsProduce("source"))
		}
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN:
		drainHold() // the group's members paused
	case switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE:
		pinned.arm("quiesce", pl.before, putsCommit)
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP:
		pinned.arm("group flip", pl.before, switchesTo("target"))
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
		pinned.arm("group release", pl.before, liftsProduce("target"))
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
		// The member's sidecar held applying the quiesce gate acknowledges
		// neither it nor, once the abort is asked for, the groups'
		// rollback: that holds groups-rolling-back.
		sc.abortPin = pinned.arm("quiesce", pl.before, putsCommit)
	}
}

// create starts the cutover through the API.
func (sc *scenario) create() {
	ctx, cancel := context.WithTimeout(sc.ctx, 30*time.Second)
	defer cancel()
	resp, err := sc.api.CreateCutover(sc.authed(ctx), sc.request())
	if err != nil {
		sc.fatalf("CreateCutover: %v", err)
	}
	sc.id = resp.GetCutover().GetId()
	// The run is meant to cover the two phases (the producers' and the
	// group's applications units of their own) or the groups' phase alone
	// (one application that produces and consumes).
	phases := map[int32][]string{}
	for _, u := range resp.GetCutover().GetCoverage().GetUnits() {
		phases[u.GetPhase()] = append(phases[u.GetPhase()], u.GetApps()...)
	}
	switch {
	case sc.pl.tr.twoPhase && (!slices.Equal(phases[1], []string{app}) || !slices.Equal(phases[2], []string{groupApp})):
		sc.fatalf("the cutover does not move %s and %s in two phases: units by phase %v (warnings %v)", app, groupApp, phases,
			resp.GetCutover().GetCoverage().GetWarnings())
	case !sc.pl.tr.twoPhase && (len(phases[1]) > 0 || !slices.Equal(phases[2], []string{app})):
		sc.fatalf("the cutover does not move %s in the groups' phase alone: units by phase %v (warnings %v)", app, phases,
			resp.GetCutover().GetCoverage().GetWarnings())
	}
}

func (sc *scenario) request() *switchyardv1.CreateCutoverRequest {
	return &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: sc.apps()},
		Source:   "source", Target: "target", Topics: []string{sc.topic}, Groups: []string{sc.group},
		Policy: &switchyardv1.CutoverPolicy{GateMode: sc.pl.gateMode, DrainTimeout: durationpb.New(30 * time.Second),
			HoldBudget: durationpb.New(20 * time.Second), AckTimeout: durationpb.New(10 * time.Second), MaxPreflightLag: 1_000_000},
	}}
}

// killInStep watches the cutover until it enters the transition's step,
// doing on the way what the plan asks (holding verify, aborting), and
// kills the control plane there.
func (sc *scenario) killInStep() {
	pl := sc.pl
	if pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT {
		return
	}
	ctx, cancel := context.WithTimeout(sc.ctx, stepTimeout)
	defer cancel()
	stream, err := sc.api.WatchCutover(ctx, &switchyardv1.WatchCutoverRequest{Id: sc.id})
	if err != nil {
		sc.fatalf("WatchCutover: %v", err)
	}
	aborted := false
	for {
		m, err := stream.Recv()
		if err != nil {
			sc.fatalf("the watch ended before the cutover entered %s (steps seen %v): %v", pl.tr.name, stepNames(sc.seen), err)
		}
		c := m.GetCutover()
		step := c.GetStep()
		if len(sc.seen) == 0 || sc.lastSeen() != step {
			sc.seen = append(sc.seen, step)
		}
		if terminal(step) {
			sc.fatalf("the cutover ended %s (%q) before entering %s; steps seen %v", stepName(step), c.GetError(), pl.tr.name, stepNames(sc.seen))
		}
		switch {
		case pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY && !sc.verifyHeld && readsNoEnds(step):
			// Drain (the group's sync, in two phases) has read the
			// source's ends for the last time before verify does: from
			// here, holding them holds verify.
			if err := sc.relaySrc.SetGate(proxy.Gate{APIKeys: []int16{keyListOffsets}, Mode: proxy.GateHold}); err != nil {
				sc.fatalf("hold ListOffsets on the control plane's source: %v", err)
			}
			sc.verifyHeld = true
		case (pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK || pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK) &&
			!aborted && step == pl.abortAt:
			sc.abort(ctx)
			aborted = true
		}
		if step == pl.tr.step {
			break
		}
	}
	if pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY && !sc.verifyHeld {
		sc.errorf("the watch showed verify before any step between the last read of the source's ends and verify (seen %v): verify was not held", stepNames(sc.seen))
	}
	entered := time.Now()
	if !sc.abortedAt.IsZero() {
		if d := entered.Sub(sc.abortedAt); d > 2*time.Second {
			sc.t.Logf("%s NOTE: the abort in %s took effect %v after AbortCutover returned", sc.tag(), stepName(pl.abortAt), d.Round(time.Millisecond))
		}
	}
	if !pl.atEntry {
		sc.waitUntil("the store holds "+pl.tr.name, 10*time.Second, func() (bool, string) {
			c, err := sc.readStored()
			return err == nil && c.GetStep() == pl.tr.step, fmt.Sprintf("stored %s (%v)", stepName(c.GetStep()), err)
		})
		time.Sleep(pl.delay) // the kill's moment inside the step, drawn from the seed
	}
	sc.inStepFor = time.Since(entered)
	sc.kill()
}

// readsNoEnds reports whether step comes after the last step that reads
// the source's end offsets before verify, and before verify: the groups'
// flip and release.
func readsNoEnds(step switchyardv1.CutoverStep) bool {
	return step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP || step == switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE
}

// groupsOnlySteps and twoPhaseSteps are the order in which a cutover goes
// through its steps on its way to done.
var (
	groupsOnlySteps = []switchyardv1.CutoverStep{switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
		switchyardv1.CutoverStep_CUTOVER_STEP_DONE}
	twoPhaseSteps = []switchyardv1.CutoverStep{switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT, switchyardv1.CutoverStep_CUTOVER_STEP_GATE,
		switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY,
		switchyardv1.CutoverStep_CUTOVER_STEP_DONE}
)

// earlier reports whether a cutover on its way to done passes step a
// before step b (a rollback step comes after the step it was entered
// from, so it is never earlier than a step of the way).
func earlier(a, b switchyardv1.CutoverStep, twoPhase bool) bool {
	way := groupsOnlySteps
	if twoPhase {
		way = twoPhaseSteps
	}
	i, j := slices.Index(way, a), slices.Index(way, b)
	return i >= 0 && (j < 0 || i < j)
}

func stepNames(steps []switchyardv1.CutoverStep) []string {
	var out []string
	for _, s := range steps {
		out = append(out, stepName(s))
	}
	return out
}

// abort asks for a rollback once the step aborted in is held.
func (sc *scenario) abort(ctx context.Context) {
	if sc.abortPin != nil {
		select {
		case <-sc.abortPin.hit:
		case <-time.After(pinHitTimeout):
			sc.fatalf("sidecar %s was never told to apply %s", sc.sidecars[sc.pl.pinned].name, sc.abortPin.what)
		}
	}
	if _, err := sc.api.AbortCutover(sc.authed(ctx), &switchyardv1.AbortCutoverRequest{Id: sc.id, Reason: "crashtest: abort in " + stepName(sc.pl.abortAt)}); err != nil {
		sc.fatalf("AbortCutover in %s: %v", stepName(sc.pl.abortAt), err)
	}
	sc.abortedAt = time.Now()
}

// kill kills the control plane and reads what its store holds.
func (sc *scenario) kill() {
	if err := sc.cp.cur().kill(); err != nil {
		sc.fatalf("%v", err)
	}
	sc.killed = time.Now()
	c, err := sc.readStored()
	if err != nil {
		sc.fatalf("after the kill: %v", err)
	}
	sc.stored = c
}

// readStored reads the cutover as the control plane's store holds it (nil
// when there is none).
func (sc *scenario) readStored() (*switchyardv1.Cutover, error) {
	b, err := os.ReadFile(filepath.Join(sc.cp.storeDir, "cutovers", sc.id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c := &switchyardv1.Cutover{}
	if err := protojson.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("stored cutover %s: %w", sc.id, err)
	}
	return c, nil
}

// letGo lets go of everything that held the step, once the process is
// dead.
func (sc *scenario) letGo() {
	for _, s := range sc.sidecars {
		s.rec.letAll()
	}
	sc.relaySrc.ClearGate()
	sc.relayDst.ClearGate()
	sc.members.unpause()
}

// holdMirrorStart holds, when the plan says so, the restarted mirror's
// start for a while: the fencing of the killed instance's transactional
// producer (InitProducerId on the target), as a slow target or an open
// transaction to abort would. A resumed cutover must wait for its mirror.
func (sc *scenario) holdMirrorStart() {
	if sc.pl.mirrorHold <= 0 {
		return
	}
	if err := sc.relayDst.SetGate(proxy.Gate{APIKeys: []int16{keyInitProducerID}, Mode: proxy.GateHold}); err != nil {
		sc.fatalf("hold InitProducerId on the control plane's target: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(sc.pl.mirrorHold):
		case <-sc.ctx.Done():
		}
		sc.relayDst.ClearGate()
	}()
	sc.t.Cleanup(func() { <-done })
}

// awaitEnd follows the cutover through the restarted control plane until
// it ends.
func (sc *scenario) awaitEnd() *switchyardv1.Cutover {
	ctx, cancel := context.WithTimeout(sc.ctx, endTimeout)
	defer cancel()
	var (
		last    *switchyardv1.Cutover
		lastErr error
	)
	for ctx.Err() == nil {
		if r := sc.cp.cur(); !r.alive() {
			sc.fatalf("the restarted control plane exited: %v", r.waitErr)
		}
		stream, err := sc.api.WatchCutover(ctx, &switchyardv1.WatchCutoverRequest{Id: sc.id})
		for err == nil {
			var m *switchyardv1.WatchCutoverResponse
			if m, err = stream.Recv(); err == nil {
				last = m.GetCutover()
				if terminal(last.GetStep()) {
					return last
				}
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	sc.fatalf("the cutover had not ended %v after the restart: last seen in %s (%q), watch: %v", endTimeout,
		stepName(last.GetStep()), last.GetError(), lastErr)
	return nil
}

// expected is the outcome Start's rule gives a cutover stored as c (nil:
// none stored) when the control plane restarts: a step before release
// rolls back, release and verify go on to done. A two-phase cutover's
// producers are past the point of no return from release on: killed
// while its group drained, quiesced or synced, it quiesces the group
// again and goes on to done — unless an abort was stored, which rolls
// the group back at its flip; killed in groups-rolling-back it ends
// failed, the producers on the target and the group on the source. Its
// group's flip and release go on to done.
//
// A cutover of one application that produces and consumes has no producer
// phase: where a two-phase one fails with its group rolled back, it is
// rolled back (nothing moved).
func expected(c *switchyardv1.Cutover, twoPhase bool) switchyardv1.CutoverStep {
	groupsBack := switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
	if !twoPhase {
		groupsBack = switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK
	}
	switch c.GetStep() {
	case switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY, switchyardv1.CutoverStep_CUTOVER_STEP_DONE,
		switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_FLIP, switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_RELEASE:
		return switchyardv1.CutoverStep_CUTOVER_STEP_DONE
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE, switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS:
		if c.GetAbortRequested() {
			return groupsBack
		}
		return switchyardv1.CutoverStep_CUTOVER_STEP_DONE
	case switchyardv1.CutoverStep_CUTOVER_STEP_GROUPS_ROLLING_BACK:
		return groupsBack
	case switchyardv1.CutoverStep_CUTOVER_STEP_FAILED:
		return switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
	default:
		return switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK
	}
}

// homeOf is where a sidecar runs once a cutover ended with outcome: the
// source after a rollback, the target when done; after a two-phase
// cutover's groups were rolled back (failed), the producers on the target
// and the group's members on the source.
func (sc *scenario) homeOf(s *sidecar, outcome switchyardv1.CutoverStep) string {
	switch {
	case outcome == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK:
		return "source"
	case outcome == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED && sc.appOf(s) == groupApp:
		return "source"
	}
	return "target"
}

// checkOutcome checks where the kill landed and how the cutover ended; it
// returns the outcome the rest of the checks hold the sidecars and records
// to.
func (sc *scenario) checkOutcome(final *switchyardv1.Cutover) switchyardv1.CutoverStep {
	pl := sc.pl
	storedStep := sc.stored.GetStep()
	want := expected(sc.stored, pl.tr.twoPhase)
	sc.t.Logf("%s killed %v after the watch showed %s (steps seen %v), the store holding %s; restarted; ended %s after %v: %s",
		sc.tag(), sc.inStepFor.Round(time.Millisecond), pl.tr.name, stepNames(sc.seen), stepName(storedStep), stepName(final.GetStep()),
		time.Since(sc.killed).Round(time.Millisecond), historyString(final))
	switch {
	case storedStep == pl.tr.step || pl.tr.step == switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT:
	case pl.atEntry && earlier(storedStep, pl.tr.step, pl.tr.twoPhase):
		// Killed as soon as the watch showed the step: it can be shown
		// before it is stored (and a step that is not stored has not
		// taken effect). Start's rule goes by what is stored.
		sc.t.Logf("%s NOTE: the watch showed %s before the store held it (stored: %s); the cutover ends by what was stored",
			sc.tag(), pl.tr.name, stepName(storedStep))
	default:
		sc.errorf("the kill meant for %s landed with the store at %s (steps seen %v): the step was not held", pl.tr.name, stepName(storedStep), stepNames(sc.seen))
	}
	if final.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED && final.GetError() == "" {
		sc.errorf("the cutover FAILED without a reason")
	}
	if final.GetStep() != want {
		sc.errorf("killed with the store at %s (abort requested: %v), the restarted control plane ended the cutover %s (error %q); want %s: "+
			"a cutover killed before release rolls back, one killed at or after release goes on to done; a two-phase one whose group "+
			"is rolled back fails with its producers on the target", stepName(storedStep), sc.stored.GetAbortRequested(),
			stepName(final.GetStep()), final.GetError(), stepName(want))
	}
	if final.GetStep() == want {
		// Each unit's stored outcome says where it ended.
		for _, u := range final.GetCoverage().GetUnits() {
			s := sc.sidecars[0]
			if slices.Contains(u.GetApps(), groupApp) {
				s = sc.sidecars[nProducers]
			}
			if home := sc.homeOf(s, want); u.GetOutcome() != home {
				sc.errorf("cutover %s: unit %s (%v) has outcome %q; want %q", stepName(want), u.GetId(), u.GetApps(), u.GetOutcome(), home)
			}
		}
	}
	if final.GetStep() == want {
		return want
	}
	if final.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_DONE || final.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK {
		return final.GetStep()
	}
	return want
}

func historyString(c *switchyardv1.Cutover) string {
	var out []string
	for _, h := range c.GetHistory() {
		s := stepName(h.GetStep())
		if h.GetFinished() != nil {
			s += " " + h.GetFinished().AsTime().Sub(h.GetStarted().AsTime()).Round(time.Millisecond).String()
		}
		if h.GetError() != "" {
			s += fmt.Sprintf(" (%s)", h.GetError())
		}
		if h.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK && h.GetDetail() != "" {
			s += fmt.Sprintf(" [%s]", h.GetDetail())
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// checkAfter checks the sidecars, the producers, the group and the records
// once the cutover has ended.
func (sc *scenario) checkAfter(final *switchyardv1.Cutover, outcome switchyardv1.CutoverStep) {
	if sc.settle(outcome, "cutover "+stepName(final.GetStep())) {
		sc.mark("settle")
		sc.progress(moreRecords, sc.homeOf(sc.sidecars[0], outcome), "cutover "+stepName(final.GetStep()))
	} else {
		sc.mark("settle")
	}
	sc.stopProducing()
	sc.mark("produce")
	var acks [][]acked
	var tried []int
	total := 0
	for _, p := range sc.producers {
		a, last, err := p.state()
		if err != nil {
			sc.errorf("producer %d (through %s): %v", p.id, sc.sidecars[p.id].name, err)
		}
		acks, tried = append(acks, a), append(tried, last)
		total += len(a)
	}

	// The group read everything acknowledged — where it ended: a group
	// left on the source while the producers moved (a two-phase cutover
	// that failed) reads what the source holds.
	wanted, where := acks, "acknowledged record"
	if sc.homeOf(sc.sidecars[nProducers], outcome) != sc.homeOf(sc.sidecars[0], outcome) {
		ctx, cancel := context.WithTimeout(sc.ctx, time.Minute)
		wanted, where = onSource(acks, readTopic(ctx, sc.t, sc.source, sc.topic)), "acknowledged record the source holds"
		cancel()
	}
	if msg, ok := sc.poll(readTimeout, func() (bool, string) {
		read := map[string]bool{}
		for _, c := range sc.members.snapshot() {
			read[c.value] = true
		}
		missing, n := 0, 0
		for _, as := range wanted {
			for _, a := range as {
				n++
				if !read[a.value] {
					missing++
				}
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d not read", missing, n)
	}); !ok {
		sc.errorf("cutover %s: the consumer group should read every %s; after %v: %s", stepName(final.GetStep()), where, readTimeout, msg)
	}
	sc.stopConsuming()
	sc.mark("read")

	if err := sc.cp.cur().terminate(); err != nil {
		sc.errorf("%v", err)
	}
	sc.mark("stop")
	ctx, cancel := context.WithTimeout(sc.ctx, 2*time.Minute)
	defer cancel()
	sc.checkRecords(ctx, outcome, acks, tried)
	sc.checkGroup(outcome, wanted)
	sc.mark("records")
	sc.checkRouting(final, outcome)
	if sc.t.Failed() && len(final.GetGroupOffsets()) > 0 {
		var offs []string
		for _, o := range final.GetGroupOffsets() {
			offs = append(offs, fmt.Sprintf("%s/%d: source %d -> target %d (%s)", o.GetTopic(), o.GetPartition(), o.GetSource(), o.GetTarget(), o.GetOutcome()))
		}
		sc.t.Logf("%s the group's offsets as the cutover synced them: %s", sc.tag(), strings.Join(offs, "; "))
	}
	sc.t.Logf("%s %d records acknowledged, %d read by the group; block window %v", sc.tag(), total, len(sc.members.snapshot()),
		final.GetBlockWindow().AsDuration().Round(time.Millisecond))
}

// settle waits until every sidecar runs where the outcome puts it
// (homeOf) without a gate; it reports false (and an error) if they do not
// within settleTimeout.
func (sc *scenario) settle(outcome switchyardv1.CutoverStep, what string) bool {
	sc.t.Helper()
	msg, ok := sc.poll(settleTimeout, func() (bool, string) {
		var wrong []string
		for _, s := range sc.sidecars {
			st := s.h.Status()
			if home := sc.homeOf(s, outcome); st.ActiveCluster != home || !st.Gate.IsZero() || st.Switching {
				wrong = append(wrong, fmt.Sprintf("%s on %s with gate %s (want the %s, no gate)", s.name, st.ActiveCluster, gateString(st.Gate), home))
			}
		}
		return len(wrong) == 0, strings.Join(wrong, "; ")
	})
	if !ok {
		sc.errorf("%s: the sidecars should run where the cutover left them without a gate; after %v: %s", what, settleTimeout, msg)
	}
	return ok
}

// onSource returns the acknowledged records the source holds.
func onSource(acks [][]acked, src []rec) [][]acked {
	held := map[string]bool{}
	for _, r := range src {
		held[r.value] = true
	}
	out := make([][]acked, len(acks))
	for i, as := range acks {
		for _, a := range as {
			if held[a.value] {
				out[i] = append(out[i], a)
			}
		}
	}
	return out
}

// progress waits until every producer has had n more records
// acknowledged.
func (sc *scenario) progress(n int, home, what string) bool {
	sc.t.Helper()
	at := map[int]int{}
	for _, p := range sc.producers {
		at[p.id] = p.count()
	}
	msg, ok := sc.poll(settleTimeout, func() (bool, string) {
		var behind []string
		for _, p := range sc.producers {
			if _, _, err := p.state(); err != nil {
				return true, "" // reported with the records
			}
			if got := p.count() - at[p.id]; got < n {
				behind = append(behind, fmt.Sprintf("producer %d: %d", p.id, got))
			}
		}
		return len(behind) == 0, strings.Join(behind, ", ")
	})
	if !ok {
		sc.errorf("%s: the producers should go on producing on the %s; acknowledged since, within %v (want %d each): %s",
			what, home, settleTimeout, n, msg)
	}
	return ok
}

// deleteIfPassed deletes the run's topics on the shared real clusters,
// unless the test failed (they are kept for a post-mortem).
func (sc *scenario) deleteIfPassed(mirrorName string) {
	if sc.t.Failed() {
		sc.t.Logf("kept topic %s, group %s and topic __switchyard_mirror_%s (target) for a post-mortem", sc.topic, sc.group, mirrorName)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for c, names := range map[*kafkatest.Cluster][]string{sc.source: {sc.topic}, sc.target: {sc.topic, "__switchyard_mirror_" + mirrorName}} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap...))
		if err != nil {
			sc.t.Logf("delete topics on %s: %v", c.Name, err)
			continue
		}
		adm := kadm.NewClient(cl)
		if _, err := adm.DeleteTopics(ctx, names...); err != nil {
			sc.t.Logf("delete topics %v on %s: %v", names, c.Name, err)
		}
		if _, err := adm.DeleteGroups(ctx, sc.group); err != nil {
			sc.t.Logf("delete group %s on %s: %v", sc.group, c.Name, err)
		}
		cl.Close()
	}
}
