package compat_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/planetest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/internal/streamsbed"
)

// TestPipelineCopier moves an exactly-once consume-transform-produce
// application written by someone else — Apache Kafka's
// TransactionalMessageCopier, the program Kafka's own system tests bounce
// brokers under — and its input producer (VerifiableProducer, retries=0)
// from the source to the target while the copier works through a backlog
// in small transactions, and holds the output to exactly-once: every
// acknowledged input value is in the output topic (read_committed, on the
// cluster the sidecars ended on) exactly once, and nothing else is.
//
// The producer and the copier are two applications behind their own
// sidecars, one cutover for both: the producer is released first, the
// copier's group is quiesced at a transaction boundary, synced and moved
// after it. COMPAT_PIPELINE=1 runs it (make test-streams runs it too); it
// needs the real-Kafka test bed and Java.
func TestPipelineCopier(t *testing.T) {
	if os.Getenv("COMPAT_PIPELINE") != "1" {
		t.Skip("COMPAT_PIPELINE=1 runs it (make test-streams): Kafka's TransactionalMessageCopier across a cutover, on the real-Kafka test bed")
	}
	if b := kafkatest.Backend(); b != kafkatest.BackendReal {
		t.Fatalf("COMPAT_PIPELINE=1 needs the real-Kafka test bed (SWITCHYARD_TEST_KAFKA=real), not %s", b)
	}
	lib, err := streamsbed.FindLib()
	if err != nil {
		t.Fatal(err)
	}
	seed := envSeed(t)
	delay := 2*time.Second + time.Duration(rand.New(rand.NewPCG(seed, 0xc0b1e5)).Int64N(int64(4*time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	source, target := kafkatest.Pair(t)
	in, out := kafkatest.Topic(t, "copier-in"), kafkatest.Topic(t, "copier-out")
	group, txnID := kafkatest.Topic(t, "copier"), kafkatest.Topic(t, "copier-txn")
	const partitions = 3
	source.CreateTopic(t, in, partitions)
	source.CreateTopic(t, out, partitions)
	dir := t.TempDir()
	t.Logf("seed %d (COMPAT_SEED repeats the timing): cutover %v into the copy; files in %s", seed, delay, dir)

	const token = "pipeline-token"
	plane, m := planetest.Start(t, source, target, token, in, out)
	const inputApp, copierApp = "copier-input", "copier"
	sidecars := map[string]*proxytest.Handle{
		inputApp:  planetest.Sidecar(t, plane, token, inputApp, "0", nil, source, target),
		copierApp: planetest.Sidecar(t, plane, token, copierApp, "0", nil, source, target),
	}
	api, withToken := planetest.Dial(t, plane, token)
	authed := withToken(ctx)
	waitFor(ctx, t, 60*time.Second, "sidecars connected", func() (bool, string) {
		n := 0
		for app := range sidecars {
			r, err := api.ListSidecars(authed, &switchyardv1.ListSidecarsRequest{App: app})
			if err != nil {
				return false, err.Error()
			}
			for _, sc := range r.GetSidecars() {
				if sc.GetConnected() {
					n++
				}
			}
		}
		return n == len(sidecars), fmt.Sprintf("%d of %d connected", n, len(sidecars))
	})
	inputAddr, copierAddr := sidecars[inputApp].Addr().String(), sidecars[copierApp].Addr().String()

	// A backlog, fast; then input that goes on through the cutover.
	var producers []*streamsbed.Producer
	var copiers []*streamsbed.Copier
	defer func() {
		for _, p := range producers {
			p.Kill()
		}
		for _, c := range copiers {
			c.Kill()
		}
	}()
	startProducer := func(prefix, throughput int, name string) *streamsbed.Producer {
		p, err := streamsbed.StartProducer(streamsbed.ProducerSpec{Lib: lib, Bootstrap: inputAddr, Topic: in,
			ValuePrefix: prefix, Throughput: throughput, Dir: dir, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		producers = append(producers, p)
		return p
	}
	const backlog = 12000
	preload := startProducer(7, 4000, "preload")
	waitFor(ctx, t, 90*time.Second, "the backlog acknowledged", func() (bool, string) {
		a, f := preload.Counts()
		return a >= backlog, fmt.Sprintf("acked %d, failed %d", a, f)
	})
	preRep, err := preload.Stop(ctx)
	if err != nil {
		t.Fatalf("stop the preload: %v", err)
	}
	live := startProducer(8, 100, "live")

	startCopier := func(name string) *streamsbed.Copier {
		c, err := streamsbed.StartCopier(streamsbed.CopierSpec{Lib: lib, Bootstrap: copierAddr, Input: in, Output: out,
			Group: group, TransactionalID: txnID, TransactionSize: 10, Dir: filepath.Join(dir, name), Name: name})
		if err != nil {
			t.Fatal(err)
		}
		copiers = append(copiers, c)
		return c
	}
	copier := startCopier("copier")
	waitFor(ctx, t, 90*time.Second, "the copier copying, and the mirror ready", func() (bool, string) {
		if done, err := copier.Exited(); done {
			t.Fatalf("the copier exited before the cutover: %v (%+v)", err, copier.Status())
		}
		st := copier.Status()
		return st.Processed > 0 && m.Status().Ready, fmt.Sprintf("copier %+v, mirror ready %v", st, m.Status().Ready)
	})
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	atCutover := copier.Status()
	if done, err := copier.Exited(); done {
		t.Fatalf("the copier finished the backlog before the cutover (%+v, %v): the test needs a larger backlog", atCutover, err)
	}
	t.Logf("cutover: the copier has copied %d records, %d to go of its assignment", atCutover.Processed, atCutover.Remaining)
	res := &streamsResult{Scenario: "pipeline"}
	runCutover(ctx, t, api, authed, &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{inputApp, copierApp}},
		Source:   "source", Target: "target",
		Policy: &switchyardv1.CutoverPolicy{GateMode: "HOLD"},
	}, func(context.Context) string { return fmt.Sprintf("copier %+v", copier.Status()) }, res)

	// The copier ends its assignment where it is now; the input stops; a
	// last copier takes what came after (it exits when it has).
	if err := copier.Wait(ctx); err != nil {
		t.Errorf("the copier: %v (%+v)", err, copier.Status())
	}
	liveRep, err := live.Stop(ctx)
	if err != nil {
		t.Errorf("stop the live input: %v", err)
	}
	tail := startCopier("copier-tail")
	if err := tail.Wait(ctx); err != nil {
		t.Errorf("the tail copier: %v (%+v)", err, tail.Status())
	}

	final := map[string]bool{}
	for _, h := range sidecars {
		final[h.Status().ActiveCluster] = true
	}
	if len(final) != 1 {
		t.Fatalf("the sidecars ended on different clusters: %v", final)
	}
	cluster := source
	if final[target.Name] {
		cluster = target
	}
	var output []string
	for _, r := range cluster.ReadCommitted(ctx, t, out) {
		output = append(output, string(r.Value))
	}
	acked := append(append([]string(nil), preRep.Acked...), liveRep.Acked...)
	failed := append(append([]streamsbed.SendError(nil), preRep.Failed...), liveRep.Failed...)
	check := streamsbed.CheckCopy(acked, failed, output)
	t.Logf("RESULT pipeline: cutover %s (%v), producers' block window %d ms; ended on the %s; copier processed %d before the tail, "+
		"rebalances %d; tail %d; %s; send errors %d", res.Cutover, res.History, res.BlockWindowMS, cluster.Name,
		copier.Status().Processed, copier.Status().Rebalances, tail.Status().Processed, check, len(failed))
	for _, p := range check.Problems {
		t.Logf("  %s", p)
	}
	if check.Failed() {
		t.Errorf("the copy broke exactly-once: %s", check)
		for _, c := range copiers {
			log, stderr := c.Files()
			t.Logf("copier files: %s, %s", log, stderr)
		}
	}
	if res.Cutover != "done" {
		t.Errorf("the cutover ended %s%s", res.Cutover, failedAt(res))
	}
}
