package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/control"
	"github.com/switchyard/switchyard/internal/clientbed"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/planetest"
)

// Settings, from the environment (see compat.mk):
//
//	COMPAT_RUNS       runs per client (default 1)
//	COMPAT_CLIENTS    comma-separated clients (default: all of clientbed.Clients)
//	COMPAT_SEED       seed of the flip timing (default: the clock; always logged)
//	COMPAT_INSTANCES  client processes per run, one sidecar each (default 2)
//	COMPAT_GATE_MODE  the cutover's Produce gate, REJECT (default) or HOLD
//	COMPAT_RESULTS    a file to append one JSON line per run to
//	COMPAT_COLD_START=1  start the cutover as soon as the group consumes,
//	                  without waiting for its first commit, and with no delay
//	COMPAT_SARAMA_DEFAULTS=1  run sarama with its default retries (3, 100ms
//	                  apart), which do not outlast a REJECT gate
//	COMPAT_TRANSACTIONAL=1  transactional producers (the clients of
//	                  clientbed.TransactionalClients; the others are
//	                  skipped): transactional.id unique per instance, a
//	                  transaction per 20 records, committed, every 10th
//	                  aborted once its records are written; the group reads
//	                  read_committed. Acknowledged then means committed, and
//	                  no aborted record may be on either cluster or reach
//	                  the group
//	COMPAT_GROUP_SHAPE  the consumers' group shape: classic (default),
//	                  consumer (KIP-848, group.protocol=consumer; Kafka
//	                  4.0+) or static (group.instance.id per instance);
//	                  the clients of clientbed.GroupShapeClients, the
//	                  others skipped
type settings struct {
	// quick is the default matrix of `make test`: neither COMPAT_RUNS nor
	// COMPAT_CLIENTS given.
	quick           bool
	runs, instances int
	clients         []clientbed.Client
	seed            uint64
	gateMode        string
	results         string
	saramaDefaults  bool
	coldStart       bool
	transactional   bool
	groupShape      string
	// moveLeaders: COMPAT_MOVE_LEADERS, how often a source partition's
	// leader is moved while the application runs there (kfake), 0: never.
	moveLeaders time.Duration
}

// Group shapes of COMPAT_GROUP_SHAPE.
const (
	shapeClassic  = "classic"
	shapeConsumer = "consumer"
	shapeStatic   = "static"
)

// The transactions of COMPAT_TRANSACTIONAL=1: records per transaction, and
// every how many transactions one is aborted.
const (
	txnRecords    = 20
	txnAbortEvery = 10
)

// envInt sets *into from the environment variable name, if set: a
// positive number, else the test fails.
func envInt(t *testing.T, name string, into *int) {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", name, v)
		}
		*into = n
	}
}

// envSeed returns COMPAT_SEED, or the clock's nanoseconds.
func envSeed(t *testing.T) uint64 {
	t.Helper()
	v := os.Getenv("COMPAT_SEED")
	if v == "" {
		return uint64(time.Now().UnixNano())
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("COMPAT_SEED=%q: %v", v, err)
	}
	return n
}

func loadSettings(t *testing.T) settings {
	t.Helper()
	s := settings{runs: 1, instances: 2, clients: clientbed.Clients(), seed: envSeed(t), gateMode: "REJECT",
		results: os.Getenv("COMPAT_RESULTS")}
	s.quick = os.Getenv("COMPAT_RUNS") == "" && os.Getenv("COMPAT_CLIENTS") == ""
	envInt(t, "COMPAT_RUNS", &s.runs)
	envInt(t, "COMPAT_INSTANCES", &s.instances)
	if v := os.Getenv("COMPAT_CLIENTS"); v != "" {
		s.clients = nil
		for _, c := range strings.Split(v, ",") {
			c := clientbed.Client(strings.TrimSpace(c))
			if !slices.Contains(clientbed.Clients(), c) {
				t.Fatalf("COMPAT_CLIENTS: unknown client %q (known: %v)", c, clientbed.Clients())
			}
			s.clients = append(s.clients, c)
		}
	}
	s.saramaDefaults = os.Getenv("COMPAT_SARAMA_DEFAULTS") == "1"
	s.coldStart = os.Getenv("COMPAT_COLD_START") == "1"
	s.transactional = os.Getenv("COMPAT_TRANSACTIONAL") == "1"
	s.groupShape = shapeClassic
	if v := os.Getenv("COMPAT_GROUP_SHAPE"); v != "" {
		if !slices.Contains([]string{shapeClassic, shapeConsumer, shapeStatic}, v) {
			t.Fatalf("COMPAT_GROUP_SHAPE %q: want %s, %s or %s", v, shapeClassic, shapeConsumer, shapeStatic)
		}
		s.groupShape = v
	}
	if v := os.Getenv("COMPAT_GATE_MODE"); v != "" {
		s.gateMode = strings.ToUpper(v)
	}
	if v := os.Getenv("COMPAT_MOVE_LEADERS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("COMPAT_MOVE_LEADERS=%q: want a positive duration such as 300ms", v)
		}
		if kafkatest.Backend() != kafkatest.BackendKfake {
			t.Fatalf("COMPAT_MOVE_LEADERS needs SWITCHYARD_TEST_KAFKA=kfake (it moves leaders with kfake's MoveTopicPartition)")
		}
		s.moveLeaders = d
	}
	return s
}

// moveLeaders moves a random partition of topic on c to a random broker
// every period until the returned stop is called; stop returns how many
// moves were made. The mover's goroutine ends with stop or ctx.
func moveLeaders(ctx context.Context, c *kafkatest.Cluster, topic string, partitions, brokers int, period time.Duration, seed uint64) (stop func() int) {
	mctx, cancel := context.WithCancel(ctx)
	moved := make(chan int, 1)
	go func() {
		n := 0
		defer func() { moved <- n }()
		rng := rand.New(rand.NewPCG(seed, 0x1eade5))
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-mctx.Done():
				return
			case <-tick.C:
			}
			if c.Fake.MoveTopicPartition(topic, int32(rng.IntN(partitions)), int32(rng.IntN(brokers))) == nil {
				n++
			}
		}
	}()
	var once sync.Once
	total := 0
	return func() int {
		once.Do(func() {
			cancel()
			total = <-moved
		})
		return total
	}
}

func needClient(t *testing.T, c clientbed.Client) {
	t.Helper()
	if err := clientbed.Available(c); err != nil {
		if os.Getenv("SWITCHYARD_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%v (`make deps` should have installed it)", err)
		}
		t.Skipf("skipped: %v (run `make deps`)", err)
	}
}

// TestCompatibility is the compatibility matrix: for each client, runs of a
// live application — every instance producing keyed records continuously
// with the library's idempotent defaults and consuming in one group with
// auto-commit, each through its own sidecar — with a cutover started at a
// random moment and traffic going on after it. After every run: no
// acknowledged record lost, none duplicated on the target, each producer's
// order kept per partition, every ack where it said, no error surfaced to
// the application, every record delivered to the group exactly once, and
// the group's committed offsets exact. docs/COMPATIBILITY.md has the
// results and the commands.
func TestCompatibility(t *testing.T) {
	s := loadSettings(t)
	t.Logf("compat: seed %d (COMPAT_SEED=%d repeats the flip timing), %d run(s) per client, %d instances, gate %s, backend %s, "+
		"cold start %v, transactional %v, group shape %s", s.seed, s.seed, s.runs, s.instances, s.gateMode, kafkatest.Backend(), s.coldStart,
		s.transactional, s.groupShape)
	rng := rand.New(rand.NewPCG(s.seed, 0x5717c4))
	for _, c := range s.clients {
		// Draw every client's delays up front: a skipped client does not
		// shift the others'.
		delays := make([]time.Duration, s.runs)
		for i := range delays {
			delays[i] = 500*time.Millisecond + time.Duration(rng.Int64N(int64(5*time.Second)))
			if s.coldStart {
				delays[i] = 0
			}
		}
		t.Run(string(c), func(t *testing.T) {
			needClient(t, c)
			if s.transactional && !slices.Contains(clientbed.TransactionalClients(), c) {
				t.Skipf("COMPAT_TRANSACTIONAL=1: %s has no transactional live mode (clients with one: %v)", c, clientbed.TransactionalClients())
			}
			if s.groupShape != shapeClassic && !slices.Contains(clientbed.GroupShapeClients(), c) {
				t.Skipf("COMPAT_GROUP_SHAPE=%s: %s's live mode has no such consumer (clients with one: %v)", s.groupShape, c, clientbed.GroupShapeClients())
			}
			if why := knownBroken[kafkatest.Backend()][c]; why != "" && s.quick {
				t.Skipf("known failure, left out of the quick matrix: %s (COMPAT_CLIENTS=%s make test-compat runs it)", why, c)
			}
			var results []*runResult
			for i, d := range delays {
				t.Run(fmt.Sprintf("run-%d", i), func(t *testing.T) {
					r := &runResult{Client: string(c), Backend: kafkatest.Backend(), Seed: s.seed, Run: i,
						FlipDelayMS: d.Milliseconds(), GateMode: s.gateMode, ColdStart: s.coldStart, Transactional: s.transactional}
					// Recorded however the run ends: a run that stopped
					// early counts as failed (Completed false).
					defer func() {
						results = append(results, r)
						if s.results != "" {
							appendResult(t, s.results, r)
						}
					}()
					runOnce(t, s, c, d, r)
				})
			}
			summarize(t, results)
		})
	}
}

func appendResult(t *testing.T, path string, r any) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encode result: %v", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// summarize logs one line per client: the row of docs/COMPATIBILITY.md.
func summarize(t *testing.T, rs []*runResult) {
	if len(rs) == 0 {
		return
	}
	var sum runResult
	var windows []int64
	failed := 0
	for _, r := range rs {
		sum.Acked += r.Acked
		sum.AckedAfterFlip += r.AckedAfterFlip
		sum.Lost += r.Lost
		sum.Duplicated += r.Duplicated
		sum.OrderViolations += r.OrderViolations
		sum.Misplaced += r.Misplaced
		sum.Notices += r.Notices
		sum.ProduceErrors += r.ProduceErrors
		sum.ConsumeErrors += r.ConsumeErrors
		sum.ClientErrors += r.ClientErrors
		sum.Consumed += r.Consumed
		sum.ConsumerDuplicates += r.ConsumerDuplicates
		sum.ConsumerMissed += r.ConsumerMissed
		sum.PositionErrors += r.PositionErrors
		sum.Aborted += r.Aborted
		sum.AbortedVisible += r.AbortedVisible
		sum.AbortedDelivered += r.AbortedDelivered
		sum.AbortedOnTarget += r.AbortedOnTarget
		windows = append(windows, r.BlockWindowMS)
		if r.failed() || r.Cutover != "done" || !r.Settled || !r.Completed {
			failed++
		}
	}
	slices.Sort(windows)
	txn := ""
	if rs[0].Transactional {
		txn = fmt.Sprintf(" transactional (committed records acked; %d records of aborted transactions, %d of them aborted on "+
			"the target, visible on a cluster %d, delivered to the group %d)", sum.Aborted, sum.AbortedOnTarget, sum.AbortedVisible,
			sum.AbortedDelivered)
	}
	t.Logf("SUMMARY %s (%s%s) on %s, gate %s:%s %d runs (%d failed); acked %d (%d after the flip); lost %d, duplicated %d, "+
		"order %d, misplaced %d; notices %d; errors surfaced: produce %d, consume %d, client %d; consumed %d, consumer duplicates %d, "+
		"missed %d; position errors %d; block window ms min %d median %d max %d",
		rs[0].Client, rs[0].Library, settingsNote(rs[0].Settings), rs[0].Backend, rs[0].GateMode, txn, len(rs), failed, sum.Acked, sum.AckedAfterFlip,
		sum.Lost, sum.Duplicated, sum.OrderViolations, sum.Misplaced, sum.Notices, sum.ProduceErrors, sum.ConsumeErrors, sum.ClientErrors,
		sum.Consumed, sum.ConsumerDuplicates, sum.ConsumerMissed, sum.PositionErrors,
		windows[0], windows[len(windows)/2], windows[len(windows)-1])
}

// knownBroken names, per backend, the clients that fail the matrix for a
// known reason (docs/COMPATIBILITY.md: an open Switchyard bug under
// "Failures found", or the client's own, under its section). The
// quick matrix of `make test` leaves them out, saying so; `make
// test-compat` and any COMPAT_CLIENTS or COMPAT_RUNS setting run them.
//
// Empty since the proxy routes Produce by partition leader (proxy/route.go):
// kafkajs 2.2.4 on kfake's two-broker target, where leaders move at the
// flip, failed 4 of 10 runs before (kafkajs issue #1303: records dropped or
// written twice), and 0 of 20 with routing (docs/COMPATIBILITY.md).
var knownBroken = map[string]map[clientbed.Client]string{}

// saramaRetryBudget is how long sarama's producer retries in the matrix:
// more than a cutover's gate lasts (the drain waits for the groups'
// auto-commit, 5s by default in most clients, 1s in sarama).
const saramaRetryBudget = 30 * time.Second

// waitFor polls cond every 20ms until it holds; it fails the test at the
// deadline or when ctx ends.
func waitFor(ctx context.Context, t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if !await(ctx, t, within, what, cond) {
		t.FailNow()
	}
}

// await is waitFor that goes on after a failure (marking the test failed
// and saying why) and reports whether cond held: after the cutover, the
// run still stops the clients and checks what they reported.
func await(ctx context.Context, t *testing.T, within time.Duration, what string, cond func() (bool, string)) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Errorf("%s: not within %v (%s)", what, within, state)
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// runOnce runs one cutover under a live application of client c and
// checks it, filling res. The application's instances stop, and their reports are
// checked, whatever happened to the cutover.
func runOnce(t *testing.T, s settings, c clientbed.Client, flipDelay time.Duration, res *runResult) {
	start := time.Now()
	saramaLog.reset()
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "compat-"+string(c))
	const partitions = 3
	source.CreateTopic(t, topic, partitions)
	group := topic + "-group"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The control plane, with its mirror.
	const token = "compat-token"
	plane, m := planetest.Start(t, source, target, token, topic)

	// One sidecar per instance, following the control plane.
	const app = "compat"
	sidecar := func(instance string) string {
		return planetest.Sidecar(t, plane, token, app, instance, nil, source, target).Addr().String()
	}
	api, withToken := planetest.Dial(t, plane, token)
	authed := withToken(ctx)

	// The application: every instance produces and consumes through its
	// own sidecar. The instances are stopped (and killed, failing that)
	// however the test ends.
	lctx, killClients := context.WithCancel(ctx)
	defer killClients()
	var lives []*clientbed.Live
	stopAll := func() []clientbed.LiveReport {
		var reps []clientbed.LiveReport
		for _, l := range lives {
			sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			rep, err := l.Stop(sctx)
			cancel()
			if err != nil {
				t.Errorf("stop: %v", err)
			}
			reps = append(reps, rep)
		}
		lives = nil
		return reps
	}
	defer func() {
		if lives != nil {
			for _, rep := range stopAll() {
				t.Logf("%s %s log tail:%s", rep.Client, rep.Spec.Prefix, tailOf(rep.Log, 6000))
			}
		}
	}()
	spec := clientbed.LiveSpec{Topic: topic, Partitions: partitions, Group: group}
	if s.transactional {
		spec.TxnRecords, spec.TxnAbortEvery = txnRecords, txnAbortEvery
		res.Settings = fmt.Sprintf("transactional.id per instance, %d records per transaction, every %dth aborted; "+
			"isolation.level=read_committed", txnRecords, txnAbortEvery)
	}
	switch s.groupShape {
	case shapeConsumer:
		spec.GroupProtocol = clientbed.GroupProtocolConsumer
		res.Settings = strings.TrimPrefix(res.Settings+"; group.protocol=consumer (KIP-848)", "; ")
	case shapeStatic:
		res.Settings = strings.TrimPrefix(res.Settings+"; group.instance.id per instance (static members)", "; ")
	}
	if c == clientbed.Sarama && !s.saramaDefaults {
		// sarama's default retries (3, 100ms apart) give up within the
		// gate: the one setting the matrix changes (docs/COMPATIBILITY.md).
		spec.RetryBudget = saramaRetryBudget
		n, b := clientbed.SaramaRetries(spec.RetryBudget)
		res.Settings = fmt.Sprintf("Producer.Retry.Max=%d, Producer.Retry.Backoff=%v", n, b)
	}
	for i := range s.instances {
		spec.Bootstrap, spec.Prefix = []string{sidecar(fmt.Sprintf("i%d", i))}, fmt.Sprintf("i%d", i)
		if s.transactional {
			spec.TransactionalID = topic + "-" + spec.Prefix
		}
		if s.groupShape == shapeStatic {
			spec.InstanceID = topic + "-" + spec.Prefix
		}
		l, err := clientbed.StartLive(lctx, c, spec)
		if err != nil {
			t.Fatal(err)
		}
		lives = append(lives, l)
	}
	progress := func() string {
		var parts []string
		for _, l := range lives {
			a, n := l.Counts()
			parts = append(parts, fmt.Sprintf("%s acked %d consumed %d", l.Report().Spec.Prefix, a, n))
		}
		return strings.Join(parts, "; ")
	}
	waitFor(ctx, t, 60*time.Second, "sidecars connected", func() (bool, string) {
		r, err := api.ListSidecars(ctx, &switchyardv1.ListSidecarsRequest{App: app})
		n := 0
		for _, sc := range r.GetSidecars() {
			if sc.GetConnected() {
				n++
			}
		}
		return err == nil && n == s.instances, fmt.Sprintf("%d connected, %v", n, err)
	})
	sadm := kadm.NewClient(source.Client(t))
	waitFor(ctx, t, 90*time.Second, "the application running, mirrored and committing", func() (bool, string) {
		for _, l := range lives {
			if a, _ := l.Counts(); a < 50 {
				return false, progress()
			}
		}
		consumed := 0
		for _, l := range lives {
			_, n := l.Counts()
			consumed += n
		}
		st := m.Status()
		mirrored := false
		for _, p := range st.Partitions {
			mirrored = mirrored || p.Topic == topic
		}
		if consumed < 50 || !st.Ready || !mirrored {
			return false, fmt.Sprintf("%s; mirror ready %v, copies the topic %v", progress(), st.Ready, mirrored)
		}
		if s.coldStart {
			return true, ""
		}
		// A live application has committed: the group has an offset on
		// every partition (the cutover's drain does not yet wait for a
		// group's first commit; see docs/COMPATIBILITY.md, COMPAT_COLD_START).
		fo, err := sadm.FetchOffsets(ctx, group)
		if err == nil {
			err = fo.Error()
		}
		if n := len(fo[topic]); err != nil || n < partitions {
			return false, fmt.Sprintf("%s; the group committed on %d of %d partitions (%v)", progress(), n, partitions, err)
		}
		return true, ""
	})

	// Leaders moving on the source under the application, until the
	// cutover ends (COMPAT_MOVE_LEADERS).
	stopMoves := func() int { return 0 }
	if s.moveLeaders > 0 {
		stopMoves = moveLeaders(ctx, source, topic, partitions, 3, s.moveLeaders, s.seed+uint64(res.Run))
		defer stopMoves()
	}

	// The cutover, at a random moment.
	t.Logf("cutover in %v", flipDelay)
	select {
	case <-time.After(flipDelay):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	resp, err := api.CreateCutover(authed, &switchyardv1.CreateCutoverRequest{Spec: &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{app}},
		Source:   "source", Target: "target", Topics: []string{topic}, Groups: []string{group},
		Policy: &switchyardv1.CutoverPolicy{GateMode: s.gateMode, DrainTimeout: durationpb.New(60 * time.Second),
			MaxPreflightLag: 1_000_000},
	}})
	if err != nil {
		t.Fatalf("create cutover: %v", err)
	}
	watch, err := api.WatchCutover(ctx, &switchyardv1.WatchCutoverRequest{Id: resp.GetCutover().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var final *switchyardv1.Cutover
	for {
		msg, err := watch.Recv()
		if err != nil {
			break
		}
		final = msg.GetCutover()
	}
	if s.moveLeaders > 0 {
		n := stopMoves()
		res.Settings = strings.TrimPrefix(fmt.Sprintf("%s; a source leader moved every %v until the cutover ended (%d moves)", res.Settings, s.moveLeaders, n), "; ")
		t.Logf("source leaders moved %d times", n)
	}
	res.Cutover = control.StepName(final.GetStep())
	res.BlockWindowMS = final.GetBlockWindow().AsDuration().Milliseconds()
	var hist []string
	for _, h := range final.GetHistory() {
		d := time.Duration(0)
		if h.GetFinished() != nil {
			d = h.GetFinished().AsTime().Sub(h.GetStarted().AsTime())
		}
		hist = append(hist, fmt.Sprintf("%s %v", control.StepName(h.GetStep()), d.Round(time.Millisecond)))
		if h.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE {
			res.ReleaseMS = d.Milliseconds()
		}
	}
	t.Logf("cutover %s: %s; block window %v", res.Cutover, strings.Join(hist, ", "), final.GetBlockWindow().AsDuration())
	if final.GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		t.Errorf("cutover ended %s: %s", res.Cutover, final.GetError())
	}

	// Traffic goes on after the flip: every instance gets 100 more acks.
	flipAcks := map[*clientbed.Live]int{}
	for _, l := range lives {
		flipAcks[l], _ = l.Counts()
	}
	if final.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		res.Stalled = !await(ctx, t, 90*time.Second, "100 acknowledgements per instance after the cutover", func() (bool, string) {
			for _, l := range lives {
				if a, _ := l.Counts(); a < flipAcks[l]+100 {
					return false, progress()
				}
			}
			return true, ""
		})
	}
	for _, l := range lives {
		pctx, cancel := context.WithTimeout(ctx, 150*time.Second)
		err := l.StopProducing(pctx)
		cancel()
		if err != nil {
			t.Errorf("stop producing: %v", err)
		}
	}
	acked := map[string]bool{}
	for _, l := range lives {
		rep := l.Report()
		for _, a := range rep.Acks {
			acked[fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)] = true
		}
		res.AckedAfterFlip += len(rep.Acks) - flipAcks[l]
	}

	// The group reads everything that was acknowledged, and commits it.
	tadm := kadm.NewClient(target.Client(t))
	offsets := func() (committed, ends map[int32]int64, err error) {
		fo, err := tadm.FetchOffsets(ctx, group)
		if err == nil {
			err = fo.Error()
		}
		eo, err2 := tadm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = err2
		}
		if err == nil {
			err = eo.Error()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("offsets of group %s on the target: %w", group, err)
		}
		committed, ends = map[int32]int64{}, map[int32]int64{}
		for part, o := range fo[topic] {
			committed[part] = o.At
		}
		eo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
		return committed, ends, nil
	}
	res.Settled = await(ctx, t, 90*time.Second, "the group consumed every acknowledged record and committed the end", func() (bool, string) {
		got := map[string]bool{}
		for _, l := range lives {
			for _, r := range l.Report().Records {
				got[r.Value] = true
			}
		}
		missing := 0
		for v := range acked {
			if !got[v] {
				missing++
			}
		}
		if missing > 0 {
			return false, fmt.Sprintf("%d acknowledged records not consumed yet; %s", missing, progress())
		}
		committed, ends, err := offsets()
		if err != nil {
			return false, err.Error()
		}
		for part, end := range ends {
			if committed[part] != end {
				return false, fmt.Sprintf("partition %d: committed %d, end %d", part, committed[part], end)
			}
		}
		return true, ""
	})
	reps := stopAll()
	if len(reps) > 0 {
		res.Library = reps[0].Library
	}
	// The positions the group left behind, once its members closed.
	committed, ends, err := offsets()
	if err != nil {
		t.Errorf("%v", err)
	}
	in := checkInput{Reports: reps, Committed: committed, End: ends,
		Source: readTopic(ctx, t, source, topic), Target: readTopic(ctx, t, target, topic)}
	if s.transactional {
		in.TargetLog = readLog(ctx, t, target, topic)
	}
	check(in, res)
	// The cutover synced the group's offset of every partition, each the
	// exact translation of the source's.
	if n := len(final.GetGroupOffsets()); n != partitions && final.GetStep() == switchyardv1.CutoverStep_CUTOVER_STEP_DONE {
		res.PositionErrors++
		res.Problems = append(res.Problems, fmt.Sprintf("position: the cutover synced %d group partitions, want %d", n, partitions))
	}
	res.SyncedPartitions = len(final.GetGroupOffsets())
	for _, g := range final.GetGroupOffsets() {
		want, err := m.OffsetMap(g.GetTopic(), g.GetPartition()).Translate(g.GetSource())
		if err != nil || g.GetTarget() != want {
			res.PositionErrors++
			res.Problems = append(res.Problems, fmt.Sprintf("position: synced %v, translation %d (%v)", g, want, err))
		}
	}
	res.ElapsedMS = time.Since(start).Milliseconds()
	t.Logf("%s (%s): sent %d, acked %d (%d after the flip), on target %d, lost %d, duplicated %d, unacked %d, misplaced %d, "+
		"order %d, unreported %d; notices %d; errors: produce %d consume %d client %d (fatal %d); consumed %d, duplicates %d, missed %d; "+
		"position errors %d; aborted %d (in the target's log %d; visible %d, delivered %d); block window %dms",
		c, res.Library, res.Sent, res.Acked, res.AckedAfterFlip, res.OnTarget, res.Lost, res.Duplicated, res.Unacked,
		res.Misplaced, res.OrderViolations, res.Unreported, res.Notices, res.ProduceErrors, res.ConsumeErrors, res.ClientErrors,
		res.FatalErrors, res.Consumed, res.ConsumerDuplicates, res.ConsumerMissed, res.PositionErrors,
		res.Aborted, res.AbortedOnTarget, res.AbortedVisible, res.AbortedDelivered, res.BlockWindowMS)
	for _, rep := range reps {
		if len(rep.Errors) > 0 {
			t.Logf("%s %s: %d errors surfaced, the first: %v; the last: %v", rep.Client, rep.Spec.Prefix, len(rep.Errors),
				rep.Errors[0], rep.Errors[len(rep.Errors)-1])
		}
	}
	if res.failed() || !res.Settled {
		for _, p := range res.Problems {
			t.Errorf("%s", p)
		}
		for _, rep := range reps {
			t.Logf("%s %s log tail:%s", rep.Client, rep.Spec.Prefix, tailOf(rep.Log, 6000))
		}
		if c == clientbed.Sarama {
			t.Logf("sarama log (start and end):\n%s", saramaLog)
		}
	}
	res.Completed = true
}

func settingsNote(s string) string {
	if s == "" {
		return ""
	}
	return "; " + s
}

func tailOf(s string, n int) string {
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return "\n" + s
}

// readLog reads every record of a topic's log, read_uncommitted: the
// records of aborted transactions too.
func readLog(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) []stored {
	t.Helper()
	return asStored(c.ReadUncommitted(ctx, t, topic))
}

// readTopic reads every committed record of a topic.
func readTopic(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) []stored {
	t.Helper()
	return asStored(c.ReadCommitted(ctx, t, topic))
}

func asStored(rs []*kgo.Record) []stored {
	out := make([]stored, 0, len(rs))
	for _, r := range rs {
		out = append(out, stored{r.Partition, r.Offset, string(r.Value), fmt.Sprintf("%d/%d", r.ProducerID, r.ProducerEpoch)})
	}
	return out
}
