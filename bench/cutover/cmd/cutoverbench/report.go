package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// pct is the p-quantile of xs by nearest rank (p=1: the maximum); 0 for
// none.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// report is everything printed at the end.
type report struct {
	opts        *options
	machine     machine
	started     time.Time
	finished    time.Time
	runs        []*runResult
	storePutMs  float64
	goroutines  [2]int // at start, at exit
	interrupted bool
}

func (r *report) allOK() bool {
	if r.interrupted || len(r.runs) == 0 {
		return false
	}
	for _, x := range r.runs {
		if !x.ok() {
			return false
		}
	}
	return true
}

// bySidecars groups the runs by number of sidecars, in the order given.
func (r *report) bySidecars() [][]*runResult {
	var out [][]*runResult
	for _, n := range r.opts.sidecars {
		var rs []*runResult
		for _, x := range r.runs {
			if x.Sidecars == n {
				rs = append(rs, x)
			}
		}
		if len(rs) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

func okRuns(rs []*runResult) []*runResult {
	var out []*runResult
	for _, x := range rs {
		if x.ok() {
			out = append(out, x)
		}
	}
	return out
}

func collect(rs []*runResult, f func(*runResult) float64) []float64 {
	out := make([]float64, 0, len(rs))
	for _, x := range rs {
		out = append(out, f(x))
	}
	return out
}

// p50max formats "p50 / max" of xs, in whole units.
func p50max(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f", pct(xs, 0.5), pct(xs, 1))
}

func (r *report) settings() string {
	o := r.opts
	si := controlclient.DefaultConfig().StatusInterval
	if o.statusInterval > 0 {
		si = o.statusInterval
	}
	txn := mirror.DefaultConfig().TxnMaxInterval
	if o.mirrorTxn > 0 {
		txn = o.mirrorTxn
	}
	kafka := "kfake in this process (source 3 brokers, target 2)"
	if o.kafka == "real" {
		kafka = "real Kafka, test bed of " + o.envFile
	}
	return fmt.Sprintf("%s; one topic of %d partitions; per sidecar one franz-go producer (defaults: idempotent, acks=all, 10 ms linger), "+
		"%.0f records/s open loop, %d-byte values, 8 keys; %s gate on Produce, default cutover policy; sidecar status interval %v; "+
		"mirror transaction interval %v; warm-up %v, %v of production after each cutover; %d runs per size, each from scratch",
		kafka, o.partitions, o.rate, o.valueBytes, o.gateMode, si, txn, o.warmup, o.after, o.runs)
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	m := r.machine
	w("### Cutover block window: `cutoverbench %s`", strings.Join(r.opts.args, " "))
	w("")
	w("%s UTC, %.0f s. Machine: %d CPUs, %s, Linux %s, %s, load average %.1f at the start (shared machine: other jobs ran; wall-clock numbers are noisy). Tree: %s.",
		r.started.UTC().Format("2006-01-02 15:04"), r.finished.Sub(r.started).Seconds(), m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.Load1, m.Commit)
	w("")
	w("Setup: %s.", r.settings())
	w("")
	w("| sidecars | runs ok | block window p50 / p99 / max, ms | producers' longest ack gap p50 / p99 / max, ms | produce latency in the window p50 / p99 / max, ms | latency before, p99 ms | process CPU-s per cutover (at rest rate) |")
	w("|---:|---:|---:|---:|---:|---:|---:|")
	for _, rs := range r.bySidecars() {
		good := okRuns(rs)
		bw := collect(good, func(x *runResult) float64 { return x.BlockWindowMs })
		var gaps, window []float64
		for _, x := range good {
			gaps = append(gaps, x.MaxGapMs...)
			window = append(window, x.windowMs...)
		}
		before := collect(good, func(x *runResult) float64 { return x.Baseline.P99Ms })
		cpu := collect(good, func(x *runResult) float64 { return x.CPUSeconds })
		rest := collect(good, func(x *runResult) float64 { return x.BaselineCPUPerSec * x.CutoverMs / 1000 })
		w("| %d | %d/%d | %s | %s | %s | %.0f | %.2f (%.2f) |", rs[0].Sidecars, len(good), len(rs),
			triple(bw), triple(gaps), triple(window), pct(before, 0.5), pct(cpu, 0.5), pct(rest, 0.5))
	}
	w("")
	w("p99 over few runs is close to the maximum. Producers' gaps pool every producer of every run (sidecars × runs values); latencies pool every record handed over between gate and release. CPU: the whole process (clusters, plane, mirror, proxies, producers) from the cutover's creation to its end; in parentheses what the same process used at rest, under the same load, in the same time.")
	w("")
	w("Steps (Cutover.history), ms, p50 / max over runs:")
	w("")
	order := []switchyardv1.CutoverStep{switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT, switchyardv1.CutoverStep_CUTOVER_STEP_GATE,
		switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN, switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS, switchyardv1.CutoverStep_CUTOVER_STEP_FLIP,
		switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE, switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY}
	hdr := "| sidecars |"
	for _, s := range order {
		hdr += " " + stepName(s) + " |"
	}
	w("%s whole cutover |", hdr)
	w("|---:|%s---:|", strings.Repeat("---:|", len(order)))
	for _, rs := range r.bySidecars() {
		good := okRuns(rs)
		line := fmt.Sprintf("| %d |", rs[0].Sidecars)
		for _, s := range order {
			line += " " + p50max(collect(good, func(x *runResult) float64 { return x.StepsMs[stepName(s)] })) + " |"
		}
		w("%s %s |", line, p50max(collect(good, func(x *runResult) float64 { return x.CutoverMs })))
	}
	w("")
	w("Where the block window goes, ms, p50 / max over runs (from the control plane's record and each sidecar's call times):")
	w("")
	w("| sidecars | gate: issue → last applied | gate: → all acked | drain: → last idle status report | gate acks already idle | drain: → mirror caught up (controller's poll) | mirror had copied all, after the gate | flip: → last switch applied | flip: one switch p50 / max | flip: → all acked | release: → last gate lifted | release: → all acked |")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, rs := range r.bySidecars() {
		good := okRuns(rs)
		f := func(g func(b breakdown) float64) string {
			return p50max(collect(good, func(x *runResult) float64 { return g(x.Breakdown) }))
		}
		sw := fmt.Sprintf("%.0f / %.0f", pct(collect(good, func(x *runResult) float64 { return x.Breakdown.SwitchP50Ms }), 0.5),
			pct(collect(good, func(x *runResult) float64 { return x.Breakdown.SwitchMaxMs }), 1))
		idle := pct(collect(good, func(x *runResult) float64 { return x.Breakdown.AckIdleShare }), 0.5)
		w("| %d | %s | %s | %s | %.0f %% | %s | %s | %s | %s | %s | %s | %s |", rs[0].Sidecars,
			f(func(b breakdown) float64 { return b.GateApplyMs }), f(func(b breakdown) float64 { return b.GateAckMs }),
			f(func(b breakdown) float64 { return b.DrainReportMs }), 100*idle, f(func(b breakdown) float64 { return b.DrainMirrorMs }),
			f(func(b breakdown) float64 { return b.MirrorDoneMs }),
			f(func(b breakdown) float64 { return b.FlipApplyMs }), sw, f(func(b breakdown) float64 { return b.FlipAckMs }),
			f(func(b breakdown) float64 { return b.ReleaseApplyMs }), f(func(b breakdown) float64 { return b.ReleaseAckMs }))
	}
	w("")
	var caught []float64
	for _, x := range r.runs {
		if x.CaughtUpCallMs > 0 {
			caught = append(caught, x.CaughtUpCallMs)
		}
	}
	w("One control-plane store write (file + directory fsync) took %.1f ms here (median of 20); one Mirror.CaughtUp call %.1f ms (median over runs).",
		r.storePutMs, pct(caught, 0.5))
	w("")
	w("Every run (block window and steps in ms; gap = producers' longest ack gap p50 / max; check = every acknowledged record on the target exactly once, nothing else, per-key order kept, nothing refused):")
	w("")
	w("| sidecars | run | cutover | end | block window | gate | drain | flip | release | gap p50 / max | produced | acked | on target | set-up s | check |")
	w("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, x := range r.runs {
		check := "ok"
		if !x.ok() {
			check = "**FAILED**: " + strings.ReplaceAll(x.failure(), "|", "/")
		}
		w("| %d | %d | %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f / %.0f | %d | %d | %d | %.1f | %s |", x.Sidecars, x.Run, x.CutoverID, x.FinalStep,
			x.BlockWindowMs, x.StepsMs["gate"], x.StepsMs["drain"], x.StepsMs["flip"], x.StepsMs["release"],
			pct(x.MaxGapMs, 0.5), pct(x.MaxGapMs, 1), x.Produced, x.Acked, x.OnTarget, x.SetupSeconds, check)
	}
	w("")
	w("Goroutines: %d at start, %d at exit.", r.goroutines[0], r.goroutines[1])
	if r.interrupted {
		w("")
		w("**Interrupted**: not every run ran.")
	}
	return b.String()
}

func triple(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f / %.0f", pct(xs, 0.5), pct(xs, 0.99), pct(xs, 1))
}

func (r *report) jsonValue() any {
	return struct {
		Command     []string     `json:"command"`
		Machine     machine      `json:"machine"`
		Settings    string       `json:"settings"`
		Started     time.Time    `json:"started"`
		Finished    time.Time    `json:"finished"`
		StorePutMs  float64      `json:"store_put_ms"`
		Goroutines  [2]int       `json:"goroutines_start_exit"`
		Interrupted bool         `json:"interrupted"`
		Runs        []*runResult `json:"runs"`
	}{append([]string{"cutoverbench"}, r.opts.args...), r.machine, r.settings(), r.started, r.finished, r.storePutMs, r.goroutines, r.interrupted, r.runs}
}

// measureStorePut times writes of a cutover record to a control-plane
// store in a temporary directory (each fsyncs the file and the directory):
// the median of 20, in ms.
func measureStorePut() (float64, error) {
	dir, err := os.MkdirTemp("", "cutoverbench-storeput-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	st, err := control.OpenStore(dir)
	if err != nil {
		return 0, err
	}
	c := &switchyardv1.Cutover{Id: "c-bench", Created: timestamppb.Now(), BlockWindow: durationpb.New(time.Second),
		Spec: &switchyardv1.CutoverSpec{Source: "source", Target: "target", Topics: []string{"t"}}}
	for i := range 50 {
		c.Sidecars = append(c.Sidecars, &switchyardv1.SidecarAck{App: benchApp, Instance: fmt.Sprintf("sidecar-%02d", i), Connected: true})
	}
	var took []float64
	for range 20 {
		start := time.Now()
		if err := st.Put("cutovers", c.GetId(), c); err != nil {
			return 0, err
		}
		took = append(took, ms(time.Since(start)))
	}
	return pct(took, 0.5), nil
}
