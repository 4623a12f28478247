package compat_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/planetest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/internal/streamsbed"
)

// Settings of TestStreamsWordCount, from the environment (see
// internal/compat/compat.mk, `make test-streams`):
//
//	COMPAT_STREAMS=1              run it; without, it is skipped: it needs the
//	                              real-Kafka test bed and Java, and takes minutes
//	COMPAT_STREAMS_RUNS           cutover runs per guarantee (default 1)
//	COMPAT_STREAMS_GUARANTEES     comma-separated processing guarantees
//	                              (default exactly_once_v2,at_least_once)
//	COMPAT_STREAMS_INSTANCES      WordCountDemo instances, one sidecar each
//	                              (default 1; more run num.standby.replicas=1)
//	COMPAT_STREAMS_SCENARIOS      comma-separated, of baseline (no cutover: the
//	                              harness proven), crash (an instance killed -9
//	                              and restarted, no cutover) and cutover
//	                              (default baseline,cutover)
//	COMPAT_STREAMS_THROUGHPUT     input records a second (default 100)
//	COMPAT_STREAMS_LOGS           keep every JVM's files under this directory
//	                              (default: a temporary one, removed)
//	COMPAT_SEED, COMPAT_RESULTS   as for TestCompatibility
//	COMPAT_GATE_MODE              the cutover's gate (default HOLD here)
//	COMPAT_STREAMS_SELECT         what the cutover selects: "both" (default:
//	                              the application and its input's producer)
//	                              or "app" (the application alone: its input
//	                              goes on being written to the source and
//	                              mirrored — a cutover without a producer
//	                              phase)
type streamsSettings struct {
	runs, instances, throughput int
	guarantees, scenarios       []string
	seed                        uint64
	gateMode, results, logs     string
	appOnly                     bool
}

// Scenarios of TestStreamsWordCount.
const (
	scenarioBaseline = "baseline"
	scenarioCrash    = "crash"
	scenarioCutover  = "cutover"
)

func loadStreamsSettings(t *testing.T) streamsSettings {
	t.Helper()
	s := streamsSettings{runs: 1, instances: 1, throughput: 100, seed: envSeed(t),
		guarantees: []string{streamsbed.ExactlyOnceV2, streamsbed.AtLeastOnce},
		scenarios:  []string{scenarioBaseline, scenarioCutover},
		gateMode:   "HOLD", results: os.Getenv("COMPAT_RESULTS"), logs: os.Getenv("COMPAT_STREAMS_LOGS")}
	envInt(t, "COMPAT_STREAMS_RUNS", &s.runs)
	envInt(t, "COMPAT_STREAMS_INSTANCES", &s.instances)
	envInt(t, "COMPAT_STREAMS_THROUGHPUT", &s.throughput)
	list := func(name string, into *[]string, known ...string) {
		if v := os.Getenv(name); v != "" {
			*into = nil
			for _, x := range strings.Split(v, ",") {
				x = strings.TrimSpace(x)
				if !slices.Contains(known, x) {
					t.Fatalf("%s: unknown %q (known: %v)", name, x, known)
				}
				*into = append(*into, x)
			}
		}
	}
	list("COMPAT_STREAMS_GUARANTEES", &s.guarantees, streamsbed.ExactlyOnceV2, streamsbed.AtLeastOnce)
	list("COMPAT_STREAMS_SCENARIOS", &s.scenarios, scenarioBaseline, scenarioCrash, scenarioCutover)
	if v := os.Getenv("COMPAT_GATE_MODE"); v != "" {
		s.gateMode = strings.ToUpper(v)
	}
	switch v := os.Getenv("COMPAT_STREAMS_SELECT"); v {
	case "", "both":
	case "app":
		s.appOnly = true
	default:
		t.Fatalf("COMPAT_STREAMS_SELECT: %q, want both or app", v)
	}
	return s
}

// streamsResult is what one run of TestStreamsWordCount found; one JSON
// line per run goes to COMPAT_RESULTS.
type streamsResult struct {
	Scenario       string `json:"scenario"`
	Guarantee      string `json:"guarantee"`
	Instances      int    `json:"instances"`
	KafkaVersion   string `json:"kafka_version"`
	StreamsVersion string `json:"streams_version"`
	Seed           uint64 `json:"seed"`
	Run            int    `json:"run"`
	// WarmupMS is how long the application took, from the start of its
	// JVMs, to run, commit on every input partition and be mirrored.
	WarmupMS int64 `json:"warmup_ms"`
	// EventDelayMS is how long after warm-up the cutover (or the crash)
	// came.
	EventDelayMS int64  `json:"event_delay_ms"`
	GateMode     string `json:"gate_mode,omitempty"`

	// Cutover is the cutover's last step ("" without one); FailedStep and
	// CutoverError say where and why it stopped short of done.
	Cutover       string   `json:"cutover,omitempty"`
	FailedStep    string   `json:"failed_step,omitempty"`
	CutoverError  string   `json:"cutover_error,omitempty"`
	History       []string `json:"history,omitempty"`
	BlockWindowMS int64    `json:"block_window_ms,omitempty"`
	// GroupAtDrainEnd is where the application's consumer group stood on
	// the source just before the cutover's drain ended: how far from
	// having committed all of its input and repartition topics.
	GroupAtDrainEnd string `json:"group_at_drain_end,omitempty"`
	historyRecords  []*switchyardv1.StepRecord
	// FinalCluster is where the sidecars were at the end: the cluster the
	// counts were read on.
	FinalCluster string `json:"final_cluster"`
	// AckedAtEvent counts the input acknowledged when the cutover (crash)
	// began; AckedAfter those acknowledged after it ended.
	AckedAtEvent int `json:"acked_at_event"`
	AckedAfter   int `json:"acked_after"`
	// InputStalled: fewer than 2 s of input acknowledged within 60 s after
	// the cutover (crash).
	InputStalled bool `json:"input_stalled"`
	// Processed: the application had processed and committed all its
	// input on the final cluster before it was stopped.
	Processed bool `json:"processed"`

	Check streamsbed.Result `json:"check"`

	// What the Streams instances' logs say, summed over instances: an
	// instance reached an error state; and since the event (the cutover,
	// the crash; for the baseline the end of warm-up): tasks lost, stores
	// wiped, changelog partitions restored from the beginning and from a
	// checkpoint, records restored. StreamsErrors counts ERROR lines.
	StreamsFailed      bool     `json:"streams_failed"`
	TasksLost          int      `json:"tasks_lost"`
	TasksCorrupted     int      `json:"tasks_corrupted"`
	StoresWiped        int      `json:"stores_wiped"`
	RestoredFromStart  int      `json:"restored_from_start"`
	RestoredFromOffset int      `json:"restored_from_offset"`
	RestoredRecords    int64    `json:"restored_records"`
	StreamsErrors      int      `json:"streams_errors"`
	StreamsLogs        []string `json:"streams_logs"`

	ElapsedMS int64 `json:"elapsed_ms"`
	Completed bool  `json:"completed"`
}

// TestStreamsWordCount runs Apache Kafka's Kafka Streams WordCountDemo
// (exactly_once_v2, at_least_once) behind Switchyard sidecars with
// Kafka's VerifiableProducer as its continuous input, behind its own
// sidecar, and holds what crossed to the application's guarantee: after a
// run every word's final count equals the input exactly (exactly-once:
// every count history 1, 2, 3, ...), or, at-least-once, is never lower and
// its duplicates are counted and reported; no acknowledged input lost.
// Scenarios: baseline (no cutover: proves the harness and its checker),
// crash (an instance killed -9 mid-run and restarted: what at-least-once
// duplicates look like) and cutover (the application and its input moved
// from the source to the target at a random moment, under load). A run
// reports the step a cutover reached and its error, the input acknowledged
// before and after, the counts exact, over and under, and what Streams did
// with its state (tasks lost, stores wiped, changelogs restored).
func TestStreamsWordCount(t *testing.T) {
	if os.Getenv("COMPAT_STREAMS") != "1" {
		t.Skip("COMPAT_STREAMS=1 runs it (make test-streams): Kafka Streams' WordCountDemo across a cutover, on the real-Kafka test bed")
	}
	if b := kafkatest.Backend(); b != kafkatest.BackendReal {
		t.Fatalf("COMPAT_STREAMS=1 needs the real-Kafka test bed (SWITCHYARD_TEST_KAFKA=real, make test-streams), not %s", b)
	}
	s := loadStreamsSettings(t)
	lib, err := streamsbed.FindLib()
	if err != nil {
		t.Fatal(err)
	}
	bedVersion := kafkatest.Env("SWITCHYARD_TEST_KAFKA_VERSION")
	t.Logf("streams: seed %d (COMPAT_SEED=%d repeats the timing), Kafka %s test bed, Streams and tools %s from %s, "+
		"guarantees %v, scenarios %v, %d cutover run(s) each, %d instance(s), gate %s, %d input records/s",
		s.seed, s.seed, bedVersion, lib.Version, lib.Dir, s.guarantees, s.scenarios, s.runs, s.instances, s.gateMode, s.throughput)
	rng := rand.New(rand.NewPCG(s.seed, 0x57e4a5))
	var all []*streamsResult
	defer func() { summarizeStreams(t, all) }()
	for _, sc := range s.scenarios {
		for _, g := range s.guarantees {
			runs := 1
			if sc == scenarioCutover {
				runs = s.runs
			}
			for i := range runs {
				delay := 500*time.Millisecond + time.Duration(rng.Int64N(int64(5*time.Second)))
				name := sc + "/" + g
				if sc == scenarioCutover {
					name += fmt.Sprintf("/run-%d", i)
				}
				t.Run(name, func(t *testing.T) {
					runStreamsOnce(t, s, lib, bedVersion, sc, g, i, delay, &all)
				})
			}
		}
	}
}

// TestStreamsWordCountQuick is `make test`'s run of TestStreamsWordCount:
// one WordCountDemo instance (exactly_once_v2) behind a sidecar, its
// VerifiableProducer input behind another, one cutover under that input
// at a seeded moment (COMPAT_SEED), then every word's count checked
// exactly against the input (every count history 1, 2, 3, ...). About
// 20 s. It runs on the real-Kafka test bed only (WordCountDemo is a JVM
// and needs real brokers), so `make test`'s kfake pass skips it; on a
// Kafka 3.x test bed it runs from SWITCHYARD_TEST_STREAMS_LIB, a 4.x lib
// (3.9.x has no Kafka Streams examples on Maven Central; testbed/test-real.sh
// sets it, from `testbed/kafka.sh streams-lib`), and skips without it.
func TestStreamsWordCountQuick(t *testing.T) {
	if b := kafkatest.Backend(); b != kafkatest.BackendReal {
		t.Skipf("WordCountDemo runs on the real-Kafka test bed only (SWITCHYARD_TEST_KAFKA=real, make test-real), not %s", b)
	}
	bedVersion := kafkatest.Env("SWITCHYARD_TEST_KAFKA_VERSION")
	lib, err := streamsbed.FindLib()
	if err != nil {
		if strings.HasPrefix(bedVersion, "3.") {
			t.Skipf("Kafka %s test bed: %v", bedVersion, err)
		}
		t.Fatal(err)
	}
	s := streamsSettings{runs: 1, instances: 1, throughput: 100, seed: envSeed(t),
		guarantees: []string{streamsbed.ExactlyOnceV2}, scenarios: []string{scenarioCutover},
		gateMode: "HOLD", logs: os.Getenv("COMPAT_STREAMS_LOGS")}
	rng := rand.New(rand.NewPCG(s.seed, 0x57e4a5))
	delay := 500*time.Millisecond + time.Duration(rng.Int64N(int64(5*time.Second)))
	t.Logf("streams: seed %d (COMPAT_SEED=%d repeats the timing), Kafka %s test bed, Streams and tools %s from %s; cutover %v after warm-up",
		s.seed, s.seed, bedVersion, lib.Version, lib.Dir, delay)
	var all []*streamsResult
	defer func() { summarizeStreams(t, all) }()
	runStreamsOnce(t, s, lib, bedVersion, scenarioCutover, streamsbed.ExactlyOnceV2, 0, delay, &all)
}

// runStreamsOnce is one run of scenario sc under guarantee g, its event
// delay after warm-up. What the run found goes to *all (and to
// COMPAT_RESULTS), also when it fails.
func runStreamsOnce(t *testing.T, s streamsSettings, lib streamsbed.Lib, bedVersion, sc, g string, i int,
	delay time.Duration, all *[]*streamsResult) {
	t.Helper()
	r := &streamsResult{Scenario: sc, Guarantee: g, Instances: s.instances, KafkaVersion: bedVersion,
		StreamsVersion: lib.Version, Seed: s.seed, Run: i}
	if sc != scenarioBaseline {
		r.EventDelayMS = delay.Milliseconds()
	}
	if sc == scenarioCutover {
		r.GateMode = s.gateMode
	}
	start := time.Now()
	defer func() {
		r.ElapsedMS = time.Since(start).Milliseconds()
		*all = append(*all, r)
		if s.results != "" {
			appendResult(t, s.results, r)
		}
	}()
	runStreams(t, s, lib, delay, r)
}

// summarizeStreams logs one line per scenario and guarantee.
func summarizeStreams(t *testing.T, rs []*streamsResult) {
	type key struct{ scenario, guarantee string }
	var order []key
	groups := map[key][]*streamsResult{}
	for _, r := range rs {
		k := key{r.Scenario, r.Guarantee}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		var failed, done, restored int
		var acked, over, under int
		var dups, lost int64
		steps := map[string]int{}
		for _, r := range groups[k] {
			if !r.Completed || r.Check.Failed() || r.StreamsFailed || !r.Processed || r.InputStalled ||
				(r.Scenario == scenarioCutover && r.Cutover != "done") {
				failed++
			}
			if r.Cutover == "done" {
				done++
			}
			if r.Cutover != "" {
				s := r.Cutover
				if r.FailedStep != "" {
					s += " at " + r.FailedStep
				}
				steps[s]++
			}
			if r.RestoredFromStart > 0 {
				restored++
			}
			acked += r.Check.Acked
			over += r.Check.OverCounted
			under += r.Check.UnderCounted
			dups += r.Check.Duplicates
			lost += r.Check.Lost
		}
		t.Logf("SUMMARY streams %s %s: %d runs (%d failed); cutovers %v; input acked %d; words over-counted %d (+%d), "+
			"under-counted %d (-%d); runs with a store restored from the beginning %d",
			k.scenario, k.guarantee, len(groups[k]), failed, steps, acked, over, dups, under, lost, restored)
	}
}

// streamsRun is one run's processes and clusters.
type streamsRun struct {
	t              *testing.T
	s              streamsSettings
	lib            streamsbed.Lib
	dir, appID     string
	source, target *kafkatest.Cluster
	sidecars       map[string]*proxytest.Handle // by instance
	wcs            []*streamsbed.WordCount      // the instances running
	started        []*streamsbed.WordCount      // every instance started, restarts too
	prod           *streamsbed.Producer
	prodStopped    bool
	guarantee      string
}

// runStreams is one run: topics reset, a control plane with its mirror,
// sidecars, WordCountDemo and its input; then the scenario's event; then
// the input stopped, the application let finish, and the counts checked.
func runStreams(t *testing.T, s streamsSettings, lib streamsbed.Lib, delay time.Duration, res *streamsResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	source, target := kafkatest.Pair(t)
	run := &streamsRun{t: t, s: s, lib: lib, source: source, target: target, guarantee: res.Guarantee,
		appID: kafkatest.Topic(t, "streams-wordcount"), sidecars: map[string]*proxytest.Handle{}}
	run.dir = t.TempDir()
	if s.logs != "" {
		run.dir = filepath.Join(s.logs, strings.ReplaceAll(t.Name(), "/", "_")+"-"+run.appID)
		if err := os.MkdirAll(run.dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("application %s; files in %s", run.appID, run.dir)

	// WordCountDemo's topics are fixed: start each run with them empty,
	// on both clusters (the mirror creates them on the target).
	const partitions = 3
	resetTopics(ctx, t, []*kafkatest.Cluster{source, target}, streamsbed.InputTopic, streamsbed.OutputTopic)
	source.CreateTopic(t, streamsbed.InputTopic, partitions)
	source.CreateTopic(t, streamsbed.OutputTopic, partitions)
	topics := []string{streamsbed.InputTopic, streamsbed.OutputTopic,
		streamsbed.RepartitionTopic(run.appID), streamsbed.ChangelogTopic(run.appID)}

	const token = "streams-token"
	plane, m := planetest.Start(t, source, target, token, streamsbed.InputTopic, streamsbed.OutputTopic, run.appID+"-.*")
	const app, inputApp = "wordcount", "wordcount-input"
	for i := range s.instances {
		name := fmt.Sprintf("wc%d", i)
		run.sidecars[name] = planetest.Sidecar(t, plane, token, app, name, nil, source, target)
	}
	run.sidecars["input"] = planetest.Sidecar(t, plane, token, inputApp, "input", nil, source, target)
	api, withToken := planetest.Dial(t, plane, token)
	authed := withToken(ctx)
	waitFor(ctx, t, 60*time.Second, "sidecars connected", func() (bool, string) {
		n := 0
		for _, a := range []string{app, inputApp} {
			r, err := api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{App: a})
			if err != nil {
				return false, err.Error()
			}
			for _, sc := range r.GetSidecars() {
				if sc.GetConnected() {
					n++
				}
			}
		}
		return n == s.instances+1, fmt.Sprintf("%d of %d connected", n, s.instances+1)
	})

	// The application, then its input. Every JVM is killed however the
	// test ends; the normal path stops them itself.
	defer run.killAll()
	for i := range s.instances {
		run.startInstance(i, fmt.Sprintf("wc%d", i))
	}
	prod, err := streamsbed.StartProducer(streamsbed.ProducerSpec{Lib: lib, Bootstrap: run.sidecars["input"].Addr().String(),
		ValuePrefix: 7, Throughput: s.throughput, Dir: run.dir, Name: "input"})
	if err != nil {
		t.Fatal(err)
	}
	run.prod = prod

	sadm := kadm.NewClient(source.Client(t))
	// The warm-up's stages, each logged when the wait moves on to it: where
	// a slow warm-up spends its time.
	warmStart, stage := time.Now(), ""
	waitingFor := func(st string) {
		if st != stage {
			t.Logf("warm-up +%v: waiting for %s", time.Since(warmStart).Round(100*time.Millisecond), st)
			stage = st
		}
	}
	waitFor(ctx, t, 120*time.Second, "the application running, committing, and mirrored", func() (bool, string) {
		if why := run.dead(); why != "" {
			t.Fatalf("%s", why)
		}
		for _, wc := range run.wcs {
			sum, err := wc.Log()
			if err != nil || sum.State != "RUNNING" {
				waitingFor("the instances RUNNING")
				return false, fmt.Sprintf("%s: state %q %v", wc.Spec().Name, sum.State, err)
			}
		}
		if a, _ := run.prod.Counts(); a < s.throughput {
			waitingFor("1 s of input acknowledged")
			return false, fmt.Sprintf("input acked %d", a)
		}
		fo, err := sadm.FetchOffsets(ctx, run.appID)
		if err == nil {
			err = fo.Error()
		}
		if n := len(fo[streamsbed.InputTopic]); err != nil || n < partitions {
			waitingFor("a commit on every input partition")
			return false, fmt.Sprintf("the application committed on %d of %d input partitions (%v)", n, partitions, err)
		}
		waitingFor("the mirror copying every topic and ready")
		st := m.Status()
		copied := map[string]bool{}
		for _, p := range st.Partitions {
			copied[p.Topic] = true
		}
		for _, tp := range topics {
			if !copied[tp] {
				return false, fmt.Sprintf("mirror ready %v, does not copy %s yet (topic errors %v)", st.Ready, tp, st.TopicErrors)
			}
		}
		return st.Ready, fmt.Sprintf("mirror ready %v", st.Ready)
	})
	res.WarmupMS = time.Since(warmStart).Milliseconds()
	t.Logf("warm-up done after %v", time.Since(warmStart).Round(100*time.Millisecond))

	// The event. What Streams did with its state is counted from here.
	before := map[string]streamsbed.LogSummary{}
	for _, wc := range run.wcs {
		sum, err := wc.Log()
		if err != nil {
			t.Fatal(err)
		}
		before[wc.Spec().Name] = sum
	}
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	res.AckedAtEvent, _ = run.prod.Counts()
	switch res.Scenario {
	case scenarioCrash:
		wc := run.wcs[0]
		t.Logf("killing %s (SIGKILL) after %v, input acked %d; restarting it on the same state directory", wc.Spec().Name, delay, res.AckedAtEvent)
		wc.Kill()
		run.startInstance(0, wc.Spec().Name+"-restarted")
	case scenarioCutover:
		t.Logf("cutover after %v, input acked %d", delay, res.AckedAtEvent)
		// Beside it, where the application's group stands on the source,
		// every second: what the drain waits for.
		observe := func(ctx context.Context) string {
			n, detail, err := streamsbed.Unprocessed(ctx, source.Bootstrap, run.appID, streamsbed.InputTopic, streamsbed.RepartitionTopic(run.appID))
			if err != nil {
				return err.Error()
			}
			return fmt.Sprintf("%d offsets behind: %s", n, detail)
		}
		apps := []string{app, inputApp}
		if s.appOnly {
			apps = apps[:1]
		}
		runCutover(ctx, t, api, authed, &switchyardv1.CutoverSpec{
			Selector: &switchyardv1.SidecarSelector{Apps: apps},
			Source:   "source", Target: "target", Topics: topics, Groups: []string{run.appID},
			Policy: &switchyardv1.CutoverPolicy{GateMode: s.gateMode},
		}, observe, res)
	}
	atEvent := len(run.prod.Report().Acked)

	// The input goes on after the event: 2 s of it.
	res.InputStalled = !await(ctx, t, 60*time.Second, "2 s of input acknowledged after the "+res.Scenario, func() (bool, string) {
		if why := run.dead(); why != "" {
			return false, why
		}
		a, f := run.prod.Counts()
		return a >= atEvent+2*s.throughput, fmt.Sprintf("acked %d (%d at the end of the %s), failed %d", a, atEvent, res.Scenario, f)
	})
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	run.prodStopped = true
	rep, err := run.prod.Stop(sctx)
	scancel()
	if err != nil {
		t.Errorf("stop the input: %v", err)
	}
	res.AckedAfter = len(rep.Acked) - atEvent
	if rep.Sent >= 0 && int(rep.Sent) != len(rep.Acked)+len(rep.Failed) {
		t.Errorf("VerifiableProducer sent %d records and reported %d acknowledged and %d failed", rep.Sent, len(rep.Acked), len(rep.Failed))
	}

	// Where the application ended: every sidecar on one cluster (the
	// input's stays on the source when the cutover did not select it).
	final := map[string]bool{}
	for name, h := range run.sidecars {
		if name != "input" || !s.appOnly {
			final[h.Status().ActiveCluster] = true
		}
	}
	if len(final) != 1 {
		t.Fatalf("the sidecars ended on different clusters: %v", final)
	}
	cluster := source
	for c := range final {
		res.FinalCluster = c
		if c == target.Name {
			cluster = target
		}
	}

	// The application processes all its input and commits it there.
	res.Processed = await(ctx, t, 150*time.Second, "the application processed and committed all input on the "+res.FinalCluster,
		func() (bool, string) {
			if why := run.dead(); why != "" {
				return false, why
			}
			n, detail, err := streamsbed.Unprocessed(ctx, cluster.Bootstrap, run.appID, streamsbed.InputTopic,
				streamsbed.RepartitionTopic(run.appID))
			if err != nil {
				return false, err.Error()
			}
			return n == 0, fmt.Sprintf("%d offsets not processed: %s", n, detail)
		})
	for _, wc := range run.wcs {
		if done, _ := wc.Exited(); done {
			continue
		}
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		if err := wc.Stop(sctx); err != nil {
			t.Errorf("stop %s: %v", wc.Spec().Name, err)
		}
		scancel()
	}

	// What crossed.
	var output []streamsbed.OutputRecord
	for _, r := range cluster.ReadCommitted(ctx, t, streamsbed.OutputTopic) {
		output = append(output, streamsbed.OutputRecord{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: r.Value})
	}
	var input []string
	for _, r := range cluster.ReadCommitted(ctx, t, streamsbed.InputTopic) {
		input = append(input, string(r.Value))
	}
	res.Check = streamsbed.Check(streamsbed.CheckInput{Guarantee: res.Guarantee, Acked: rep.Acked, Failed: rep.Failed,
		Input: input, Output: output})
	for _, wc := range run.started {
		sum, err := wc.Log()
		if err != nil {
			t.Errorf("%s: %v", wc.Spec().Name, err)
		}
		b := before[wc.Spec().Name]
		res.StreamsFailed = res.StreamsFailed || sum.Failed()
		res.TasksLost += sum.Lost - b.Lost
		res.TasksCorrupted += sum.Corrupted - b.Corrupted
		res.StoresWiped += len(sum.Wiped) - len(b.Wiped)
		res.RestoredFromStart += len(sum.RestoredFromStart) - len(b.RestoredFromStart)
		res.RestoredFromOffset += len(sum.RestoredFromOffset) - len(b.RestoredFromOffset)
		res.RestoredRecords += sum.RestoredRecords - b.RestoredRecords
		res.StreamsErrors += sum.Errors
		res.StreamsLogs = append(res.StreamsLogs, wc.Spec().Name+": "+sum.String())
		for _, e := range sum.FirstErrors {
			t.Logf("%s logged: %s", wc.Spec().Name, e)
		}
	}

	t.Logf("RESULT %s %s: cutover %q%s; input acked %d at the event, %d after; ended on the %s; processed %v; %s; "+
		"since the event: tasks lost %d, corrupted %d, stores wiped %d, changelogs restored from the beginning %d, from a checkpoint %d, "+
		"%d records restored",
		res.Scenario, res.Guarantee, res.Cutover, failedAt(res), res.AckedAtEvent, res.AckedAfter, res.FinalCluster, res.Processed, res.Check,
		res.TasksLost, res.TasksCorrupted, res.StoresWiped, res.RestoredFromStart, res.RestoredFromOffset, res.RestoredRecords)
	for _, l := range res.StreamsLogs {
		t.Logf("streams %s", l)
	}
	for _, p := range res.Check.Problems {
		t.Logf("  %s", p)
	}
	if res.Check.Failed() {
		t.Errorf("the counts break %s: %s", res.Guarantee, res.Check)
	}
	if res.StreamsFailed {
		t.Errorf("a Streams instance reached an error state: %v", res.StreamsLogs)
	}
	if res.Scenario == scenarioCutover && res.Cutover != "done" {
		t.Errorf("the cutover ended %s%s", res.Cutover, failedAt(res))
	}
	if res.Check.Failed() || res.StreamsFailed || !res.Processed {
		run.logTails()
	}
	res.Completed = true
}

func failedAt(r *streamsResult) string {
	if r.FailedStep == "" {
		return ""
	}
	return fmt.Sprintf(" (failed at %s: %s)", r.FailedStep, r.CutoverError)
}

// startInstance starts WordCountDemo instance i (a restart replaces it),
// connected to its sidecar, with its files under run.dir/wc<i>.
func (r *streamsRun) startInstance(i int, name string) {
	r.t.Helper()
	standbys := 0
	if r.s.instances > 1 {
		standbys = 1
	}
	wc, err := streamsbed.StartWordCount(streamsbed.WordCountSpec{Lib: r.lib,
		Bootstrap: r.sidecars[fmt.Sprintf("wc%d", i)].Addr().String(), AppID: r.appID, Guarantee: r.guarantee,
		Standbys: standbys, Dir: filepath.Join(r.dir, fmt.Sprintf("wc%d", i)), Name: name})
	if err != nil {
		r.t.Fatal(err)
	}
	if i < len(r.wcs) {
		r.wcs[i] = wc
	} else {
		r.wcs = append(r.wcs, wc)
	}
	r.started = append(r.started, wc)
}

// dead says which JVM exited before it was stopped, "" if none.
func (r *streamsRun) dead() string {
	for _, wc := range r.wcs {
		if done, err := wc.Exited(); done {
			log, _ := wc.Files()
			return fmt.Sprintf("%s exited: %v (log %s)", wc.Spec().Name, err, log)
		}
	}
	if r.prod != nil && !r.prodStopped {
		if done, err := r.prod.Exited(); done {
			return fmt.Sprintf("VerifiableProducer exited: %v", err)
		}
	}
	return ""
}

func (r *streamsRun) killAll() {
	for _, wc := range r.started {
		wc.Kill()
	}
	if r.prod != nil {
		r.prod.Kill()
	}
}

// logTails logs the end of every JVM's files, for a failed run.
func (r *streamsRun) logTails() {
	files := func(log, stderr string) []string { return []string{log, stderr} }
	var all []string
	for _, wc := range r.started {
		all = append(all, files(wc.Files())...)
	}
	if r.prod != nil {
		all = append(all, files(r.prod.Files())...)
	}
	for _, f := range all {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		r.t.Logf("%s:%s", f, tailOf(string(b), 4000))
	}
}

// runCutover starts a cutover and follows it to its end, into res. Until
// then it calls observe every second; res.GroupAtDrainEnd keeps the last
// observation made before the drain ended.
func runCutover(ctx context.Context, t *testing.T, api switchyardv1.ControlServiceClient, authed context.Context,
	spec *switchyardv1.CutoverSpec, observe func(context.Context) string, res *streamsResult) {
	t.Helper()
	type observation struct {
		at   time.Time
		what string
	}
	var seen []observation // owned by the observer until done closes
	octx, stopObserving := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			at := time.Now()
			what := observe(octx)
			if octx.Err() != nil {
				return
			}
			seen = append(seen, observation{at, what})
			select {
			case <-octx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	defer func() {
		stopObserving()
		<-done
		for _, h := range res.historyRecords {
			if h.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN || h.GetFinished() == nil {
				continue
			}
			for _, o := range seen {
				if o.at.Before(h.GetFinished().AsTime()) {
					res.GroupAtDrainEnd = fmt.Sprintf("%v into the drain: %s", o.at.Sub(h.GetStarted().AsTime()).Round(100*time.Millisecond), o.what)
				}
			}
		}
		if res.GroupAtDrainEnd != "" {
			t.Logf("the application's group on the source before the drain ended: %s", res.GroupAtDrainEnd)
		}
	}()
	resp, err := api.CreateCutover(authed, &switchyardv1.CreateCutoverRequest{Spec: spec})
	if err != nil {
		res.Cutover, res.FailedStep, res.CutoverError = "not started", "create", err.Error()
		t.Errorf("create cutover: %v", err)
		return
	}
	watch, err := api.WatchCutover(ctx, &switchyardv1.WatchCutoverRequest{Id: resp.GetCutover().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	final := resp.GetCutover()
	for {
		msg, err := watch.Recv()
		if err != nil {
			if ctx.Err() != nil {
				t.Errorf("cutover %s: still %s when the run's time ran out", final.GetId(), control.StepName(final.GetStep()))
			}
			break
		}
		final = msg.GetCutover()
	}
	res.Cutover = control.StepName(final.GetStep())
	res.CutoverError = final.GetError()
	res.BlockWindowMS = final.GetBlockWindow().AsDuration().Milliseconds()
	res.historyRecords = final.GetHistory()
	for _, h := range final.GetHistory() {
		d := time.Duration(0)
		if h.GetFinished() != nil {
			d = h.GetFinished().AsTime().Sub(h.GetStarted().AsTime())
		}
		res.History = append(res.History, fmt.Sprintf("%s %v", control.StepName(h.GetStep()), d.Round(time.Millisecond)))
		if h.GetError() != "" && res.FailedStep == "" {
			res.FailedStep = control.StepName(h.GetStep())
			if res.CutoverError == "" {
				res.CutoverError = h.GetError()
			}
		}
	}
	t.Logf("cutover %s: %s; block window %v; error %q", res.Cutover, strings.Join(res.History, ", "),
		final.GetBlockWindow().AsDuration(), res.CutoverError)
}

// resetTopics deletes topics on every cluster and waits until they are
// gone, so that a run starts with them empty.
func resetTopics(ctx context.Context, t *testing.T, clusters []*kafkatest.Cluster, topics ...string) {
	t.Helper()
	for _, c := range clusters {
		adm := kadm.NewClient(c.Client(t))
		resps, err := adm.DeleteTopics(ctx, topics...)
		if err != nil {
			t.Fatalf("delete %v on %s: %v", topics, c.Name, err)
		}
		for _, r := range resps {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				t.Fatalf("delete %s on %s: %v", r.Topic, c.Name, r.Err)
			}
		}
		waitFor(ctx, t, 60*time.Second, "topics deleted on the "+c.Name, func() (bool, string) {
			md, err := adm.ListTopics(ctx, topics...)
			if err != nil {
				return false, err.Error()
			}
			var left []string
			for _, tp := range topics {
				if d, ok := md[tp]; ok && d.Err == nil {
					left = append(left, tp)
				}
			}
			return len(left) == 0, fmt.Sprintf("still there: %v", left)
		})
	}
}
