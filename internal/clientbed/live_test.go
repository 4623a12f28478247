package clientbed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// TestLiveOnKfake runs every client in live mode straight against a kfake
// cluster, with no proxy and no switch: it produces until it has a few
// hundred acknowledgements, stops producing, and must have consumed every
// acknowledged record exactly once, with no error, before it stops.
func TestLiveOnKfake(t *testing.T) {
	for _, c := range Clients() {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			rep, _ := runLiveOnKfake(t, c, "live-", LiveSpec{})
			if rep.Sent != len(rep.Acks) {
				t.Errorf("%d records sent, %d acknowledged", rep.Sent, len(rep.Acks))
			}
			t.Logf("%s: %d sent, %d acknowledged, %d consumed", rep.Library, rep.Sent, len(rep.Acks), len(rep.Records))
		})
	}
}

// TestLiveTransactionalOnKfake runs every client with a transactional live
// mode straight against a kfake cluster: transactions of 10 records, every
// 3rd aborted. Every committed record is acknowledged and consumed exactly
// once; the records of aborted transactions are really in the log (a
// read_uncommitted read finds each where its report placed it: the abort
// had something to hide), absent from a read_committed read, and never
// delivered to the read_committed group.
func TestLiveTransactionalOnKfake(t *testing.T) {
	for _, c := range TransactionalClients() {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			rep, read := runLiveOnKfake(t, c, "live-txn-", LiveSpec{TxnRecords: 10, TxnAbortEvery: 3})
			if rep.Sent != len(rep.Acks)+len(rep.Aborted) {
				t.Errorf("%d records sent, %d acknowledged, %d aborted", rep.Sent, len(rep.Acks), len(rep.Aborted))
			}
			if len(rep.Aborted) < 50 {
				t.Errorf("%d records of aborted transactions, want a third of %d", len(rep.Aborted), rep.Sent)
			}
			delivered := map[string]bool{}
			for _, r := range rep.Records {
				delivered[r.Value] = true
			}
			committed := map[string]bool{}
			for _, r := range read(true) {
				committed[string(r.Value)] = true
			}
			logged := map[string]bool{}
			for _, r := range read(false) {
				logged[fmt.Sprintf("%d/%d %s", r.Partition, r.Offset, r.Value)] = true
			}
			for _, a := range rep.Aborted {
				v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)
				if delivered[v] || committed[v] {
					t.Errorf("aborted %s visible: delivered %v, read_committed %v", v, delivered[v], committed[v])
				}
				if !logged[fmt.Sprintf("%d/%d %s", a.Partition, a.Offset, v)] {
					t.Errorf("aborted %s is not at %d/%d (read_uncommitted)", v, a.Partition, a.Offset)
				}
			}
			t.Logf("%s: %d sent, %d acknowledged (committed), %d aborted, %d consumed", rep.Library, rep.Sent, len(rep.Acks),
				len(rep.Aborted), len(rep.Records))
		})
	}
}

// runLiveOnKfake runs client c in live mode (spec gives what is not the
// cluster's: with TxnRecords set, a transactional producer) on a fresh
// three-partition topic of a kfake cluster until it has 300
// acknowledgements, stops producing, waits until every acknowledged record
// was consumed and stops it. It fails the test on any error the client
// reported or an acknowledged record not consumed exactly once. read reads
// the topic back, read_committed or not.
func runLiveOnKfake(t *testing.T, c Client, topicPrefix string, spec LiveSpec) (rep LiveReport, read func(committed bool) []*kgo.Record) {
	t.Helper()
	needClient(t, c)
	cluster := kafkatest.NewFake(t, "source", 1)
	topic := kafkatest.Topic(t, topicPrefix+string(c))
	cluster.CreateTopic(t, topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	spec.Bootstrap, spec.Topic, spec.Partitions, spec.Group, spec.Prefix = cluster.Bootstrap, topic, 3, topic+"-g", string(c)+"-0"
	if spec.TxnRecords > 0 {
		spec.TransactionalID = topic + "-0"
	}
	l, err := StartLive(ctx, c, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := l.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	waitLive(ctx, t, l, "300 acknowledgements", func(r LiveReport) bool { return len(r.Acks) >= 300 })
	if err := l.StopProducing(ctx); err != nil {
		t.Fatal(err)
	}
	acked := l.Report().Acks
	waitLive(ctx, t, l, "every acknowledged record consumed", func(r LiveReport) bool { return len(r.Records) >= len(acked) })
	rep, err = l.Stop(ctx)
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, e := range rep.Errors {
		t.Errorf("error: %v", e)
	}
	seen := map[string]int{}
	for _, r := range rep.Records {
		seen[r.Value]++
	}
	for _, a := range rep.Acks {
		if v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq); seen[v] != 1 {
			t.Errorf("acknowledged %s consumed %d times", v, seen[v])
		}
	}
	return rep, func(committed bool) []*kgo.Record {
		if committed {
			return cluster.ReadCommitted(ctx, t, topic)
		}
		return cluster.ReadUncommitted(ctx, t, topic)
	}
}

// waitLive polls l's report until cond holds, failing the test when ctx
// ends or the instance exits first.
func waitLive(ctx context.Context, t *testing.T, l *Live, what string, cond func(LiveReport) bool) {
	t.Helper()
	for !cond(l.Report()) {
		select {
		case <-ctx.Done():
			r := l.Report()
			t.Fatalf("%s: timed out (%d acked, %d consumed, errors %v)\n%s", what, len(r.Acks), len(r.Records), r.Errors, stderrTail(r.Log))
		case <-l.Done():
			r := l.Report()
			t.Fatalf("%s: the client exited (%v)\n%s", what, r.Errors, stderrTail(r.Log))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
