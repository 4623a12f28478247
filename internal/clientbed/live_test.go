package clientbed

import (
	"context"
	"fmt"
	"testing"
	"time"

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
			needClient(t, c)
			cluster := kafkatest.NewFake(t, "source", 1)
			topic := kafkatest.Topic(t, "live-"+string(c))
			cluster.CreateTopic(t, topic, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := StartLive(ctx, c, LiveSpec{Bootstrap: cluster.Bootstrap, Topic: topic, Partitions: 3,
				Group: topic + "-g", Prefix: string(c) + "-0"})
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
			rep, err := l.Stop(ctx)
			if err != nil {
				t.Fatalf("stop: %v", err)
			}
			if rep.Sent != len(rep.Acks) {
				t.Errorf("%d records sent, %d acknowledged", rep.Sent, len(rep.Acks))
			}
			for _, e := range rep.Errors {
				t.Errorf("error: %v", e)
			}
			seen := map[string]int{}
			for _, r := range rep.Records {
				seen[r.Value]++
			}
			for _, a := range rep.Acks {
				v := fmt.Sprintf("%s-%d", rep.Spec.Prefix, a.Seq)
				if seen[v] != 1 {
					t.Errorf("acknowledged %s consumed %d times", v, seen[v])
				}
			}
			t.Logf("%s: %d sent, %d acknowledged, %d consumed", rep.Library, rep.Sent, len(rep.Acks), len(rep.Records))
		})
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
