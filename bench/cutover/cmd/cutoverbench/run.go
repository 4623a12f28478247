package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// latency summarizes latencies, in milliseconds.
type latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func summarize(ms []float64) latency {
	if len(ms) == 0 {
		return latency{}
	}
	return latency{N: len(ms), P50Ms: pct(ms, 0.5), P99Ms: pct(ms, 0.99), MaxMs: pct(ms, 1)}
}

// breakdown splits the block window, in milliseconds. The parts of one
// step add up to the step's duration.
type breakdown struct {
	// GateApplyMs: gate issued (gated_at; includes the rule's store write)
	// → the last sidecar applied it. GateAckMs: → every ack in (step end).
	GateApplyMs float64 `json:"gate_apply_ms"`
	GateAckMs   float64 `json:"gate_ack_ms"`
	// DrainReportMs: drain start → the last sidecar's first status report
	// after it showing no Produce in flight. DrainMirrorMs: → drain end
	// (mirror caught up, as polled by the controller).
	DrainReportMs float64 `json:"drain_report_ms"`
	DrainMirrorMs float64 `json:"drain_mirror_ms"`
	// FlipApplyMs: flip start → the last sidecar's switch applied;
	// FlipAckMs: → every ack in. SwitchP50Ms, SwitchMaxMs: one switch's own
	// duration (proxy.Switch), over the sidecars.
	FlipApplyMs float64 `json:"flip_apply_ms"`
	FlipAckMs   float64 `json:"flip_ack_ms"`
	SwitchP50Ms float64 `json:"switch_p50_ms"`
	SwitchMaxMs float64 `json:"switch_max_ms"`
	// AckIdleShare: the share of sidecars whose acknowledgement of the gate
	// (the report sent right after applying it) already showed no Produce
	// in flight, so that report alone could have ended their drain.
	AckIdleShare float64 `json:"ack_idle_share"`
	// MirrorDoneMs: gate issued → the mirror had committed everything the
	// source holds (sampled every 2 ms), whether or not the controller had
	// looked yet.
	MirrorDoneMs float64 `json:"mirror_done_ms"`
	// ReleaseApplyMs: release start → the last sidecar lifted its gate;
	// ReleaseAckMs: → every ack in (released_at).
	ReleaseApplyMs float64 `json:"release_apply_ms"`
	ReleaseAckMs   float64 `json:"release_ack_ms"`
}

// runResult is one run's outcome.
type runResult struct {
	Sidecars  int      `json:"sidecars"`
	Run       int      `json:"run"`
	CutoverID string   `json:"cutover_id,omitempty"`
	FinalStep string   `json:"final_step,omitempty"`
	Err       string   `json:"error,omitempty"`
	Problems  []string `json:"problems,omitempty"`

	BlockWindowMs float64            `json:"block_window_ms"`
	StepsMs       map[string]float64 `json:"steps_ms"`
	CutoverMs     float64            `json:"cutover_ms"` // created → ended
	Breakdown     breakdown          `json:"breakdown"`

	MaxGapMs []float64 `json:"producer_max_gap_ms"` // per producer
	Window   latency   `json:"window_latency"`      // records handed over between gate and release
	Baseline latency   `json:"baseline_latency"`    // records handed over in the second before the cutover

	CPUSeconds        float64 `json:"cpu_seconds"`          // whole process, created → ended
	BaselineCPUPerSec float64 `json:"baseline_cpu_per_sec"` // whole process under load, no cutover
	CaughtUpCallMs    float64 `json:"caught_up_call_ms"`    // one Mirror.CaughtUp call, after the run

	Produced     int     `json:"produced"`
	Acked        int     `json:"acked"`
	OnTarget     int     `json:"on_target"`
	SetupSeconds float64 `json:"setup_seconds"`
	// SourceEnds are the source's end offsets after the run, by partition:
	// how the keys spread the load.
	SourceEnds map[int32]int64 `json:"source_end_offsets,omitempty"`

	windowMs []float64 // raw window latencies, pooled in the report
}

func (r *runResult) ok() bool {
	return r.Err == "" && len(r.Problems) == 0 && r.FinalStep == stepName(switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
}

func (r *runResult) failure() string {
	var parts []string
	if r.Err != "" {
		parts = append(parts, r.Err)
	}
	if r.FinalStep != "" && r.FinalStep != stepName(switchyardv1.CutoverStep_CUTOVER_STEP_DONE) {
		parts = append(parts, "cutover ended "+r.FinalStep)
	}
	parts = append(parts, r.Problems...)
	return strings.Join(parts, "; ")
}

func stepName(s switchyardv1.CutoverStep) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s.String(), "CUTOVER_STEP_"), "_", "-"))
}

func terminal(s switchyardv1.CutoverStep) bool {
	return s == switchyardv1.CutoverStep_CUTOVER_STEP_DONE || s == switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK ||
		s == switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// oneRun sets up clusters, control plane, n sidecars and n producers,
// runs one cutover under load, checks the target and tears everything
// down.
func oneRun(ctx context.Context, o *options, n, k int, log *zap.Logger) *runResult {
	res := &runResult{Sidecars: n, Run: k, StepsMs: map[string]float64{}}
	rctx, cancel := context.WithTimeout(ctx, o.runTimeout)
	defer cancel()
	// Torn down in reverse: producers, API connection, sidecars, control
	// plane, topics, clusters.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	fail := func(err error) *runResult {
		res.Err = err.Error()
		return res
	}
	setupStart := time.Now()

	cl, err := openClusters(o)
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, cl.close)
	suffix := randHex(4)
	topic, mirrorName := "cutover-bench-"+suffix, "bench-"+suffix
	// The target topic too, as an operator preparing a migration would; the
	// mirror would create it, but only after its first attempts failed.
	for _, b := range [][]string{cl.source, cl.target} {
		if err := createTopic(rctx, b, topic, o.partitions); err != nil {
			return fail(err)
		}
	}
	if o.kafka == "real" {
		cleanups = append(cleanups, func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := deleteTopics(dctx, cl.source, topic); err != nil {
				log.Warn("delete the source topic", zap.Error(err))
			}
			// The mirror's checkpoint topic is __switchyard_mirror_<name>.
			if err := deleteTopics(dctx, cl.target, topic, "__switchyard_mirror_"+mirrorName); err != nil {
				log.Warn("delete the target topics", zap.Error(err))
			}
		})
	}

	// The control plane, with its mirror.
	storeDir, err := os.MkdirTemp("", "cutoverbench-store-")
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { _ = os.RemoveAll(storeDir) })
	mc := mirror.DefaultConfig()
	mc.Name = mirrorName
	mc.Topics = topics.Policy{Include: []string{topic}}
	if o.mirrorTxn > 0 {
		mc.TxnMaxInterval = o.mirrorTxn
	}
	token := randHex(16)
	plane, err := control.NewPlane(rctx, control.PlaneConfig{
		Server:   control.ServerConfig{Listen: "127.0.0.1:0", Token: token},
		StoreDir: storeDir,
		Clusters: []*switchyardv1.Cluster{{Name: "source", Bootstrap: cl.source}, {Name: "target", Bootstrap: cl.target}},
		Mirrors:  []control.PlaneMirror{{Source: "source", Target: "target", Config: mc}},
	}, prometheus.NewRegistry(), log.Named("plane"))
	if err != nil {
		return fail(err)
	}
	pctx, stopPlane := context.WithCancel(context.Background())
	planeDone := make(chan error, 1)
	go func() { planeDone <- plane.Run(pctx) }()
	cleanups = append(cleanups, func() {
		stopPlane()
		if err := <-planeDone; err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("control plane stopped", zap.Error(err))
		}
	})

	// The sidecars, following it.
	sidecars := make([]*sidecar, 0, n)
	for i := range n {
		sc, err := startSidecar(rctx, i, cl, plane.Addr().String(), token, o, log)
		if err != nil {
			return fail(err)
		}
		sidecars = append(sidecars, sc)
		cleanups = append(cleanups, sc.stop)
	}
	if err := waitUntil(rctx, "sidecars connected", 20*time.Millisecond, func() (bool, error) {
		up := 0
		for _, s := range plane.Registry.List(benchApp) {
			if s.GetConnected() && s.GetStatus().GetActiveCluster() == "source" {
				up++
			}
		}
		return up == n, nil
	}); err != nil {
		return fail(err)
	}
	m := plane.Mirror(mirrorName)
	if err := waitUntil(rctx, "mirror ready", 20*time.Millisecond, func() (bool, error) {
		st := m.Status()
		parts := 0
		for _, p := range st.Partitions {
			if p.Topic == topic {
				parts++
			}
		}
		return st.Ready && parts == o.partitions, nil
	}); err != nil {
		return fail(err)
	}

	// One producer per sidecar.
	producers := make([]*producer, n)
	for i, sc := range sidecars {
		p, err := newProducer(i, sc.addr, topic, o.rate, o.valueBytes)
		if err != nil {
			return fail(err)
		}
		producers[i] = p
		cleanups = append(cleanups, p.cl.Close)
	}
	prodCtx, stopProducing := context.WithCancel(rctx)
	var pwg sync.WaitGroup
	stopProducers := sync.OnceFunc(func() { stopProducing(); pwg.Wait() })
	cleanups = append(cleanups, stopProducers)
	for _, p := range producers {
		pwg.Add(1)
		go func() { defer pwg.Done(); p.run(prodCtx) }()
	}
	if err := waitUntil(rctx, "every producer acknowledged", 10*time.Millisecond, func() (bool, error) {
		for _, p := range producers {
			if p.ackedCount() == 0 {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return fail(err)
	}
	res.SetupSeconds = time.Since(setupStart).Seconds()
	if err := sleep(rctx, o.warmup/2); err != nil {
		return fail(err)
	}
	cpu0, t0 := processCPU(), time.Now()
	// Plus a random part below the status interval: the last sidecar's
	// report ticker started when it connected, just before production did,
	// and a whole number of intervals later the gate would always land just
	// after its tick (the worst case) instead of at a random phase.
	jitter := rand.N(controlclient.DefaultConfig().StatusInterval)
	if o.statusInterval > 0 {
		jitter = rand.N(o.statusInterval)
	}
	if err := sleep(rctx, o.warmup-o.warmup/2+jitter); err != nil {
		return fail(err)
	}
	res.BaselineCPUPerSec = (processCPU() - cpu0).Seconds() / time.Since(t0).Seconds()

	// The cutover, through the API.
	conn, err := grpc.NewClient(plane.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { _ = conn.Close() })
	api := switchyardv1.NewControlServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+token)
	// The mirror's progress, sampled every 2 ms while the cutover runs: when
	// it had really copied everything, as against when the controller's
	// 100 ms poll noticed.
	sampler := startMirrorSampler(m, topic, o.partitions)
	cpuStart := processCPU()
	resp, err := api.CreateCutover(authed, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{benchApp}},
		Source:   "source", Target: "target", Topics: []string{topic},
		Policy: &switchyardv1.CutoverPolicy{GateMode: o.gateMode},
	}})
	if err != nil {
		return fail(fmt.Errorf("create the cutover: %w", err))
	}
	res.CutoverID = resp.GetCutover().GetId()
	final, err := waitCutover(rctx, plane.Controller, res.CutoverID)
	cpuEnd := processCPU()
	samples := sampler.stop()
	if final != nil {
		res.FinalStep = stepName(final.GetStep())
		if final.GetError() != "" {
			res.Err = final.GetError()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("cutover %s: %w", res.CutoverID, err))
	}
	res.CPUSeconds = (cpuEnd - cpuStart).Seconds()

	// Production goes on for a while on the target, then stops; every
	// record handed over is acknowledged or refused before the check.
	if err := sleep(rctx, o.after); err != nil {
		return fail(err)
	}
	stopProducers()
	for _, p := range producers {
		fctx, cancel := context.WithTimeout(rctx, 30*time.Second)
		err := p.cl.Flush(fctx)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("producer %d: flush: %w", p.id, err))
		}
	}
	start := time.Now()
	if _, _, err := m.CaughtUp(rctx, topic); err == nil {
		res.CaughtUpCallMs = ms(time.Since(start))
	}

	measure(res, final, sidecars, producers)
	if ends, err := endOffsets(rctx, cl.source, topic); err == nil && final.GetGatedAt() != nil {
		res.SourceEnds = ends
		// Nothing reaches the source after the gate: its end offsets now are
		// those the mirror had to reach.
		if at := samples.caughtUpAt(ends); !at.IsZero() {
			res.Breakdown.MirrorDoneMs = ms(at.Sub(final.GetGatedAt().AsTime()))
		}
	}
	if res.FinalStep != stepName(switchyardv1.CutoverStep_CUTOVER_STEP_DONE) {
		return res
	}
	recs, err := readTopic(rctx, cl.target, topic)
	if err != nil {
		return fail(fmt.Errorf("read the target: %w", err))
	}
	res.OnTarget, res.Problems = checkTarget(recs, producers)
	return res
}

// waitCutover waits until the cutover ends and returns its final state.
func waitCutover(ctx context.Context, ct *control.Controller, id string) (*switchyardv1.Cutover, error) {
	for {
		ch := ct.Changed()
		c, ok := ct.Get(id)
		if !ok {
			return nil, fmt.Errorf("cutover %s unknown", id)
		}
		if terminal(c.GetStep()) {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c, ctx.Err()
		}
	}
}

// measure fills in the timings of a run from the cutover's record, the
// sidecars' call times and the producers' acknowledgements.
func measure(res *runResult, c *switchyardv1.Cutover, sidecars []*sidecar, producers []*producer) {
	steps := map[switchyardv1.CutoverStep]*switchyardv1.StepRecord{}
	var ended time.Time
	for _, h := range c.GetHistory() {
		steps[h.GetStep()] = h
		if h.GetFinished() != nil {
			res.StepsMs[stepName(h.GetStep())] += ms(h.GetFinished().AsTime().Sub(h.GetStarted().AsTime()))
			ended = h.GetFinished().AsTime()
		}
	}
	created := c.GetCreated().AsTime()
	res.CutoverMs = ms(ended.Sub(created))
	res.BlockWindowMs = ms(c.GetBlockWindow().AsDuration())
	if c.GetGatedAt() == nil || c.GetReleasedAt() == nil {
		return // never gated, or never released: no window to break down
	}
	gated, released := c.GetGatedAt().AsTime(), c.GetReleasedAt().AsTime()
	started := func(s switchyardv1.CutoverStep) time.Time { return steps[s].GetStarted().AsTime() }
	finished := func(s switchyardv1.CutoverStep) time.Time { return steps[s].GetFinished().AsTime() }

	// Per sidecar: when it applied the gate, reported idle during the
	// drain, finished its switch, lifted the gate.
	var lastGate, lastIdle, lastSwitch, lastClear time.Time
	var switchMs []float64
	later := func(a, b time.Time) time.Time {
		if b.After(a) {
			return b
		}
		return a
	}
	drainStart := started(switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN)
	flipStart := started(switchyardv1.CutoverStep_CUTOVER_STEP_FLIP)
	releaseStart := started(switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE)
	idleAcks := 0
	for _, sc := range sidecars {
		status, gate, clear, switches := sc.proxy.events()
		g := firstAfter(gate, gated)
		lastGate = later(lastGate, g)
		for _, c := range status {
			if !g.IsZero() && !c.at.Before(g) {
				if c.produceInFlight == 0 {
					idleAcks++
				}
				break
			}
		}
		lastIdle = later(lastIdle, firstIdleAfter(status, drainStart))
		lastClear = later(lastClear, firstAfter(clear, releaseStart))
		for _, s := range switches {
			if !s.start.Before(flipStart) && s.err == nil {
				lastSwitch = later(lastSwitch, s.end)
				switchMs = append(switchMs, ms(s.end.Sub(s.start)))
			}
		}
	}
	b := &res.Breakdown
	b.AckIdleShare = float64(idleAcks) / float64(len(sidecars))
	b.GateApplyMs = ms(lastGate.Sub(gated))
	b.GateAckMs = ms(finished(switchyardv1.CutoverStep_CUTOVER_STEP_GATE).Sub(lastGate))
	b.DrainReportMs = ms(lastIdle.Sub(drainStart))
	b.DrainMirrorMs = ms(finished(switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN).Sub(lastIdle))
	b.FlipApplyMs = ms(lastSwitch.Sub(flipStart))
	b.FlipAckMs = ms(finished(switchyardv1.CutoverStep_CUTOVER_STEP_FLIP).Sub(lastSwitch))
	b.SwitchP50Ms, b.SwitchMaxMs = pct(switchMs, 0.5), pct(switchMs, 1)
	b.ReleaseApplyMs = ms(lastClear.Sub(releaseStart))
	b.ReleaseAckMs = ms(released.Sub(lastClear))

	// The producers' view.
	from, to := gated.Add(-time.Second), released.Add(time.Second)
	var baseline []float64
	for _, p := range producers {
		sent, acked, _, _, _ := p.snapshot()
		res.Produced += len(sent)
		var acks []time.Time
		for seq, a := range acked {
			if a.IsZero() {
				continue
			}
			res.Acked++
			lat := ms(a.Sub(sent[seq]))
			switch s := sent[seq]; {
			case !s.Before(gated) && !s.After(released):
				res.windowMs = append(res.windowMs, lat)
			case !s.Before(created.Add(-time.Second)) && s.Before(created):
				baseline = append(baseline, lat)
			}
			if !a.Before(from) && !a.After(to) {
				acks = append(acks, a)
			}
		}
		slices.SortFunc(acks, func(x, y time.Time) int { return x.Compare(y) })
		gap := time.Duration(0)
		if len(acks) < 2 {
			gap = to.Sub(from) // nothing acknowledged around the cutover
		}
		for i := 1; i < len(acks); i++ {
			gap = max(gap, acks[i].Sub(acks[i-1]))
		}
		res.MaxGapMs = append(res.MaxGapMs, ms(gap))
	}
	res.Window = summarize(res.windowMs)
	res.Baseline = summarize(baseline)
}

// mirrorSampler records the mirror's committed position (offset map Next)
// of every partition of a topic, every 2 ms, until stopped.
type mirrorSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	samples mirrorSamples
}

type mirrorSamples struct {
	at   []time.Time
	next [][]int64 // by sample, by partition
}

func startMirrorSampler(m *mirror.Mirror, topic string, partitions int) *mirrorSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &mirrorSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			row := make([]int64, partitions)
			for p := range partitions {
				row[p] = -1
				if om := m.OffsetMap(topic, int32(p)); om != nil {
					row[p] = om.Next()
				}
			}
			s.samples.at = append(s.samples.at, time.Now())
			s.samples.next = append(s.samples.next, row)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *mirrorSampler) stop() mirrorSamples {
	s.cancel()
	<-s.done
	return s.samples
}

// caughtUpAt is the first sample at which every partition had reached
// ends (by partition); zero if none did.
func (s mirrorSamples) caughtUpAt(ends map[int32]int64) time.Time {
	for i, row := range s.next {
		ok := true
		for p, next := range row {
			if next < ends[int32(p)] {
				ok = false
				break
			}
		}
		if ok {
			return s.at[i]
		}
	}
	return time.Time{}
}

// endOffsets lists a topic's end offsets (high watermarks) by partition.
func endOffsets(ctx context.Context, bootstrap []string, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var lerr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = o.Err
		}
		out[o.Partition] = o.Offset
	})
	return out, lerr
}
