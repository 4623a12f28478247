package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readTopic reads every committed record of a topic, read_committed, in
// partition and offset order, once no transaction is pending on it (last
// stable offset = high watermark on every partition). It returns each
// record's key and value, by partition.
func readTopic(ctx context.Context, bootstrap []string, topic string) (map[int32][][2]string, error) {
	admCl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	var ends kadm.ListedOffsets
	err = waitUntil(ctx, "no transaction pending on the target", 20*time.Millisecond, func() (bool, error) {
		committed, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return false, err
		}
		hw, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false, err
		}
		settled := true
		hw.Each(func(o kadm.ListedOffset) {
			if lso, ok := committed.Lookup(o.Topic, o.Partition); !ok || lso.Err != nil || lso.Offset != o.Offset {
				settled = false
			}
		})
		ends = committed
		return settled, nil
	})
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	next := map[int32]int64{}
	out := map[int32][][2]string{}
	for {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if next[o.Partition] < o.Offset {
				done = false
			}
		})
		if done {
			return out, nil
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %s: %w", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				out[r.Partition] = append(out[r.Partition], [2]string{string(r.Key), string(r.Value)})
			}
		})
	}
}

// checkTarget checks the records on the target against what the producers
// handed over: every acknowledged record exactly once, nothing that was
// never produced, per key in the order produced. It returns the number of
// records on the target and the problems found (none: correct).
func checkTarget(byPartition map[int32][][2]string, producers []*producer) (int, []string) {
	type pseq struct{ id, seq int }
	count := map[pseq]int{}
	lastSeq := map[string]int{}
	var problems []string
	note := func(format string, args ...any) {
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		} else if len(problems) == 10 {
			problems = append(problems, "…")
		}
	}
	total := 0
	for part, recs := range byPartition {
		for _, kv := range recs {
			total++
			id, seq, ok := parseValue(kv[1])
			if !ok || id < 0 || id >= len(producers) {
				note("partition %d: record %q was never produced", part, truncate(kv[1], 32))
				continue
			}
			if kv[0] != recordKey(id, seq) {
				note("record p%d-%d has key %q, want %q", id, seq, kv[0], recordKey(id, seq))
			}
			count[pseq{id, seq}]++
			if last, seen := lastSeq[kv[0]]; seen && seq <= last {
				note("key %s: p%d-%d after p%d-%d (out of order)", kv[0], id, seq, id, last)
			}
			lastSeq[kv[0]] = seq
		}
	}
	for _, p := range producers {
		sent, acked, failed, nFailed, firstErr := p.snapshot()
		if nFailed > 0 {
			note("producer %d: %d records refused (first: %v)", p.id, nFailed, firstErr)
		}
		for seq := range sent {
			n := count[pseq{p.id, seq}]
			switch {
			case !acked[seq].IsZero() && n != 1:
				note("acknowledged record p%d-%d is on the target %d times", p.id, seq, n)
			case acked[seq].IsZero() && !failed[seq]:
				note("record p%d-%d was neither acknowledged nor refused", p.id, seq)
			case failed[seq] && n > 1:
				note("refused record p%d-%d is on the target %d times", p.id, seq, n)
			}
			delete(count, pseq{p.id, seq})
		}
	}
	for k, n := range count {
		note("record p%d-%d is on the target %d times but was never handed to a producer", k.id, k.seq, n)
	}
	return total, problems
}

func parseValue(v string) (id, seq int, ok bool) {
	head, _, found := strings.Cut(v, "|")
	if !found || !strings.HasPrefix(head, "p") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(head[1:], "-")
	if !found {
		return 0, 0, false
	}
	id, err1 := strconv.Atoi(a)
	seq, err2 := strconv.Atoi(b)
	return id, seq, err1 == nil && err2 == nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
