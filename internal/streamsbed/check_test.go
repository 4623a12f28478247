package streamsbed

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestWords(t *testing.T) {
	// Java's value.toLowerCase().split("\\W+") on the same lines (jshell,
	// OpenJDK 17).
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"7.12", []string{"7", "12"}},
		{"", []string{""}},
		{".5", []string{"", "5"}},
		{"5.", []string{"5"}},
		{"...", []string{}},
		{"Hello, World!", []string{"hello", "world"}},
		{"a__b-c", []string{"a__b", "c"}},
		{"  x  y ", []string{"", "x", "y"}},
		{"ÄB.c", []string{"", "b", "c"}},
		{"12", []string{"12"}},
		{"-3.5", []string{"", "3", "5"}},
	} {
		t.Run(fmt.Sprintf("%q", tc.line), func(t *testing.T) {
			if got := Words(tc.line); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Words(%q) = %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// wordCount models WordCountDemo: every word of every processed line
// increments its count in store, and the new count is written to out.
type wordCount struct {
	store map[string]int64
	out   []OutputRecord
}

func (w *wordCount) process(lines ...string) {
	if w.store == nil {
		w.store = map[string]int64{}
	}
	for _, l := range lines {
		for _, word := range Words(l) {
			w.store[word]++
			v := make([]byte, 8)
			binary.BigEndian.PutUint64(v, uint64(w.store[word]))
			w.out = append(w.out, OutputRecord{Partition: 0, Offset: int64(len(w.out)), Key: word, Value: v})
		}
	}
}

func inputs(from, to int) []string {
	var vs []string
	for i := from; i < to; i++ {
		vs = append(vs, fmt.Sprintf("7.%d", i))
	}
	return vs
}

func TestCheck(t *testing.T) {
	all := inputs(0, 50)
	for _, tc := range []struct {
		name string
		// run makes what a run left; the input topic and the acks are all
		// unless it changes them.
		run func(in *CheckInput)
		// failed: under exactly_once_v2, and under at_least_once.
		failedEOS, failedALOS bool
		check                 func(t *testing.T, r Result)
	}{
		{"every record counted once", func(in *CheckInput) {
			var w wordCount
			w.process(all...)
			in.Output = w.out
		}, false, false, func(t *testing.T, r Result) {
			// The numbers 0 to 49, "7" among them ("7.7" holds it twice).
			if r.Words != 50 || r.Exact != 50 || r.OutputRecords != 100 {
				t.Errorf("words %d, exact %d, output %d: want 50, 50, 100", r.Words, r.Exact, r.OutputRecords)
			}
		}},
		{"records processed again after a crash, state kept (at-least-once)", func(in *CheckInput) {
			var w wordCount
			w.process(all[:30]...)
			w.process(all[20:]...) // 20..29 again
			in.Output = w.out
		}, true, false, func(t *testing.T, r Result) {
			// "7" 10 too many, and 10 numbers counted twice (7.7 is not
			// among them).
			if r.OverCounted != 11 || r.Duplicates != 20 || r.BrokenHistory != 0 || r.UnderCounted != 0 {
				t.Errorf("over %d (+%d), broken %d, under %d: want 11 (+20), 0, 0", r.OverCounted, r.Duplicates, r.BrokenHistory, r.UnderCounted)
			}
		}},
		{"state restored behind the output (counts repeated)", func(in *CheckInput) {
			var w wordCount
			w.process(all[:30]...)
			w.store = nil // restored from an empty changelog, input from 30 on
			w.process(all[30:]...)
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			// "7" counted 31 times in the first 30 lines, lost.
			if r.UnderCounted != 1 || r.Lost != 31 || r.BrokenHistory != 1 {
				t.Errorf("under %d (-%d), broken %d: want 1 (-31) for word 7, 1", r.UnderCounted, r.Lost, r.BrokenHistory)
			}
		}},
		{"input records never processed", func(in *CheckInput) {
			var w wordCount
			w.process(all[:45]...)
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			if r.UnderCounted != 6 || r.Missing != 5 || r.Lost != 10 {
				t.Errorf("under %d, missing %d, lost %d: want 6, 5, 10", r.UnderCounted, r.Missing, r.Lost)
			}
		}},
		{"an update skipped in the output", func(in *CheckInput) {
			var w wordCount
			w.process(all...)
			for i, o := range w.out {
				if o.Key == "7" && binary.BigEndian.Uint64(o.Value) == 10 {
					w.out = append(w.out[:i], w.out[i+1:]...)
					break
				}
			}
			in.Output = w.out
		}, true, false, func(t *testing.T, r Result) {
			if r.BrokenHistory != 1 || r.Exact != 50 {
				t.Errorf("broken %d, exact %d: want 1, 50", r.BrokenHistory, r.Exact)
			}
		}},
		{"an acknowledged record not in the input topic", func(in *CheckInput) {
			in.Input = all[:49]
			var w wordCount
			w.process(in.Input...)
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			if r.InputLost != 1 || r.Exact != r.Words {
				t.Errorf("input lost %d, exact %d of %d: want 1, all", r.InputLost, r.Exact, r.Words)
			}
		}},
		{"a record in the input topic twice, counted twice", func(in *CheckInput) {
			in.Input = append(append([]string(nil), all...), all[3])
			var w wordCount
			w.process(in.Input...)
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			if r.InputDuplicated != 1 || r.Exact != r.Words {
				t.Errorf("input duplicated %d, exact %d of %d: want 1, all", r.InputDuplicated, r.Exact, r.Words)
			}
		}},
		{"a failed send that was written is counted", func(in *CheckInput) {
			in.Acked = all[:49]
			in.Failed = []SendError{{Value: all[49], Exception: "class org.apache.kafka.common.errors.TimeoutException", Message: "expired"}}
			var w wordCount
			w.process(all...)
			in.Output = w.out
		}, false, false, func(t *testing.T, r Result) {
			if r.InputUnacked != 1 || r.ErrorKinds["TimeoutException"] != 1 || r.Exact != r.Words {
				t.Errorf("unacked %d, kinds %v, exact %d of %d: want 1, TimeoutException 1, all", r.InputUnacked, r.ErrorKinds, r.Exact, r.Words)
			}
		}},
		{"a word counted that the input does not hold", func(in *CheckInput) {
			var w wordCount
			w.process(append(append([]string(nil), all...), "x")...)
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			if r.Foreign != 1 || r.Exact != 50 {
				t.Errorf("foreign %d, exact %d: want 1 (word x), 50", r.Foreign, r.Exact)
			}
		}},
		{"a count that is not a long", func(in *CheckInput) {
			var w wordCount
			w.process(all...)
			w.out = append(w.out, OutputRecord{Key: "7", Value: []byte("50")})
			in.Output = w.out
		}, true, true, func(t *testing.T, r Result) {
			if r.Malformed != 1 {
				t.Errorf("malformed %d: want 1", r.Malformed)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, g := range []struct {
				guarantee string
				failed    bool
			}{{ExactlyOnceV2, tc.failedEOS}, {AtLeastOnce, tc.failedALOS}} {
				in := CheckInput{Guarantee: g.guarantee, Acked: all, Input: all}
				tc.run(&in)
				r := Check(in)
				if r.Failed() != g.failed {
					t.Errorf("%s: Failed() = %v, want %v: %s; %v", g.guarantee, r.Failed(), g.failed, r, r.Problems)
				}
				tc.check(t, r)
			}
		})
	}
}

func TestLogScan(t *testing.T) {
	// Lines as Kafka Streams 4.3.1 writes them with jvm.go's log config.
	const chunk1 = `[2026-12-07 10:00:00,001] INFO stream-client [app-1] State transition from CREATED to REBALANCING (org.apache.kafka.streams.KafkaStreams)
[2026-12-07 10:00:00,002] INFO stream-thread [app-1-StreamThread-1] State transition from CREATED to STARTING (org.apache.kafka.streams.processor.internals.StreamThread)
[2026-12-07 10:00:01,000] INFO stream-client [app-1] State transition from REBALANCING to RUNNING (org.apache.kafka.streams.KafkaStreams)
[2026-12-07 10:00:05,000] INFO stream-thread [app-1-StreamThread-1] at state RUNNING: partitions [streams-plaintext-input-0] lost due to missed rebalance.
	lost active tasks: [0_0]
	lost assigned standby tasks: []
 (org.apache.kafka.streams.processor.internals.StreamsRebalanceListener)
[2026-12-07 10:00:05,100] DEBUG stream-thread [app-1-StreamThread-1] task [0_0] Wiping state stores for ACTIVE task 0_0 (org.apache.kafka.streams.processor.internals.StateManagerUtil)
[2026-12-07 10:00:05,200] WARN stream-thread [app-1-StreamThread-1] Detected the states of tasks {1_2=[app-changelog-2]} are corrupted. Will close the task as dirty and re-create and bootstrap from scratch. (org.apache.kafka.streams.processor.internals.StreamThread)
[2026-12-07 10:00:05,300] ERROR stream-thread [app-1-StreamThread-1] some failure (org.apache.kafka.streams.processor.internals.StreamThread)
java.lang.IllegalStateException: boom
	at Foo.bar(Foo.java:1)
[2026-12-07 10:00:06,000] DEBUG stream-thread [app-1-StreamThread-1] Start restoring changelog partition app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-2 from the beginning offset to end offset 812 since we cannot find current offset. (org.apache.kafka.streams.processor.internals.StoreChangelogReader)
[2026-12-07 10:00:06,001] DEBUG stream-thread [app-1-StreamThread-1] Start restoring changelog partition app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-1 from current offset 40 to end offset 90. (org.apache.kafka.streams.processor.internals.Store`
	const chunk2 = `ChangelogReader)
[2026-12-07 10:00:07,000] INFO stream-thread [app-1-StreamThread-1] Finished restoring changelog app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-2 to store KSTREAM-AGGREGATE-STATE-STORE-0000000003 with a total number of 812 records (org.apache.kafka.streams.processor.internals.StoreChangelogReader)
[2026-12-07 10:00:07,001] INFO stream-thread [app-1-StreamThread-1] Finished restoring changelog app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-1 to store KSTREAM-AGGREGATE-STATE-STORE-0000000003 with a total number of 50 records (org.apache.kafka.streams.processor.internals.StoreChangelogReader)
[2026-12-07 10:00:08,000] INFO stream-client [app-1] State transition from RUNNING to PENDING_ERROR (org.apache.kafka.streams.KafkaStreams)
`
	path := filepath.Join(t.TempDir(), "wc.log")
	scan := &logScan{path: path}
	if s, err := scan.update(); err != nil || s.State != "" {
		t.Fatalf("before the file exists: %+v, %v", s, err)
	}
	if err := os.WriteFile(path, []byte(chunk1), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := scan.update()
	if err != nil {
		t.Fatal(err)
	}
	// The last line is not complete yet: not scanned.
	if s.State != "RUNNING" || s.Lost != 1 || len(s.Wiped) != 1 || s.Corrupted != 1 || s.Errors != 1 ||
		len(s.RestoredFromStart) != 1 || len(s.RestoredFromOffset) != 0 || s.Failed() {
		t.Fatalf("after the first chunk: %s", s)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(chunk2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = scan.update()
	if err != nil {
		t.Fatal(err)
	}
	want := LogSummary{
		State:              "PENDING_ERROR",
		Transitions:        map[string]int{"REBALANCING": 1, "RUNNING": 1, "PENDING_ERROR": 1},
		Lost:               1,
		Wiped:              []string{"active 0_0"},
		RestoredFromStart:  []string{"app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-2"},
		RestoredFromOffset: []string{"app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-changelog-1 from 40"},
		RestoredRecords:    862,
		Corrupted:          1,
		Errors:             1,
		Warnings:           1,
	}
	if len(s.FirstErrors) != 1 || !strings.Contains(s.FirstErrors[0], "some failure") {
		t.Errorf("first errors %q", s.FirstErrors)
	}
	s.FirstErrors = nil
	if !reflect.DeepEqual(s, want) {
		t.Errorf("summary\n got %+v\nwant %+v", s, want)
	}
	if !s.Failed() {
		t.Error("PENDING_ERROR is not reported as failed")
	}
}

// TestCheckCopy: each way a copy can break exactly-once is counted, and a
// failed send that reached the output is not one of them.
func TestCheckCopy(t *testing.T) {
	acked := []string{"7.0", "7.1", "7.2", "7.3"}
	failed := []SendError{{Value: "7.4", Exception: "NotEnoughReplicasException"}, {Value: "7.5"}}
	exact := CheckCopy(acked, failed, []string{"7.2", "7.0", "7.1", "7.3", "7.4"})
	if exact.Failed() || exact.FailedCopied != 1 || exact.Output != 5 {
		t.Errorf("exact copy: %s %v", exact, exact.Problems)
	}
	bad := CheckCopy(acked, failed, []string{"7.0", "7.0", "7.0", "7.1", "7.3", "8.9", "7.4", "7.4"})
	if bad.Missing != 1 || bad.Duplicated != 3 || bad.Unknown != 1 || !bad.Failed() {
		t.Errorf("broken copy: %s", bad)
	}
	if len(bad.Problems) != 4 || !strings.Contains(strings.Join(bad.Problems, "\n"), "missing: acknowledged 7.2") {
		t.Errorf("problems %q", bad.Problems)
	}
}
