package streamsbed

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

var nonWord = regexp.MustCompile(`\W+`)

// Words splits a line as WordCountDemo does:
// value.toLowerCase().split("\\W+"). Java's split keeps a leading empty
// string (a line starting with a separator), drops trailing ones, and
// returns the line itself when nothing matches. \W is ASCII in both Java
// and Go.
func Words(line string) []string {
	line = strings.ToLower(line)
	locs := nonWord.FindAllStringIndex(line, -1)
	if len(locs) == 0 {
		return []string{line}
	}
	out := make([]string, 0, len(locs)+1)
	prev := 0
	for _, l := range locs {
		out = append(out, line[prev:l[0]])
		prev = l[1]
	}
	out = append(out, line[prev:])
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// OutputRecord is one record of the output topic: a word and its new count.
type OutputRecord struct {
	Partition int32
	Offset    int64
	Key       string
	Value     []byte
}

// CheckInput is what a run left behind.
type CheckInput struct {
	// Guarantee is the application's processing.guarantee.
	Guarantee string
	// Acked and Failed are what VerifiableProducer reported.
	Acked  []string
	Failed []SendError
	// Input holds the values of the input topic on the cluster the
	// application ran on last (read_committed): what it had to count.
	Input []string
	// Output holds the output topic there (read_committed), ordered by
	// partition and offset.
	Output []OutputRecord
}

// Result is what Check found. The counts are what a run reports.
type Result struct {
	Guarantee string `json:"guarantee"`

	// The input.
	Acked      int            `json:"acked"`
	SendErrors int            `json:"send_errors"`
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	// InputRecords counts the input topic's records.
	InputRecords int `json:"input_records"`
	// InputLost: acknowledged, not in the input topic.
	InputLost int `json:"input_lost"`
	// InputDuplicated: extra copies of a value in the input topic.
	InputDuplicated int `json:"input_duplicated"`
	// InputUnacked: in the input topic, never acknowledged (a send
	// reported failed whose record was written after all).
	InputUnacked int `json:"input_unacked"`

	// The counts.
	// Words counts the distinct words of the input.
	Words         int `json:"words"`
	OutputRecords int `json:"output_records"`
	// Exact counts the words whose last count equals their occurrences in
	// the input.
	Exact int `json:"exact"`
	// OverCounted counts the words whose last count is higher: input
	// records counted more than once. Duplicates sums the excess.
	OverCounted int   `json:"over_counted"`
	Duplicates  int64 `json:"duplicates"`
	// UnderCounted counts the words whose last count is lower, Missing
	// those of them never counted at all; Lost sums the shortfall.
	UnderCounted int   `json:"under_counted"`
	Missing      int   `json:"missing"`
	Lost         int64 `json:"lost"`
	// Foreign counts words counted that the input does not hold.
	Foreign int `json:"foreign"`
	// Malformed counts output records whose value is not an 8-byte long.
	Malformed int `json:"malformed"`
	// BrokenHistory counts the words whose counts in the output log are
	// not 1, 2, 3, ... in order: a count repeated or gone back (state
	// restored behind what was already written) or skipped (an update
	// lost). Exactly-once allows none.
	BrokenHistory int `json:"broken_history"`

	// Problems gives examples of each kind of finding.
	Problems []string `json:"problems,omitempty"`
}

// Failed reports whether the run broke its guarantee: an acknowledged
// input record lost or stored twice, a word counted less than the input
// holds it or never input, a malformed count; and under exactly-once any
// word counted more often, or a count history other than 1, 2, 3, ...
// (at-least-once may count a record again: reported, not failed).
func (r Result) Failed() bool {
	if r.InputLost+r.InputDuplicated+r.UnderCounted+r.Foreign+r.Malformed > 0 {
		return true
	}
	return r.Guarantee != AtLeastOnce && r.OverCounted+r.BrokenHistory > 0
}

func (r Result) String() string {
	kinds := make([]string, 0, len(r.ErrorKinds))
	for k, n := range r.ErrorKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%s: input acked %d, send errors %d %v; input topic %d records (acked lost %d, duplicated %d, unacked %d); "+
		"%d words, %d output records: exact %d, over-counted %d (+%d), under-counted %d (-%d, never counted %d), foreign %d, "+
		"malformed %d, broken count histories %d",
		r.Guarantee, r.Acked, r.SendErrors, kinds, r.InputRecords, r.InputLost, r.InputDuplicated, r.InputUnacked,
		r.Words, r.OutputRecords, r.Exact, r.OverCounted, r.Duplicates, r.UnderCounted, r.Lost, r.Missing, r.Foreign,
		r.Malformed, r.BrokenHistory)
}

// maxExamples bounds the examples Check keeps per kind of finding.
const maxExamples = 5

// findings collects examples, up to maxExamples per kind.
type findings struct {
	seen map[string]int
	out  []string
}

func (f *findings) note(kind, format string, args ...any) {
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	if f.seen[kind]++; f.seen[kind] <= maxExamples {
		f.out = append(f.out, kind+": "+fmt.Sprintf(format, args...))
	}
}

// Check compares what the application counted with what it had to count:
// each word's occurrences in the input topic, against the last count the
// output topic holds for it and the history of its counts.
func Check(in CheckInput) Result {
	r := Result{Guarantee: in.Guarantee, Acked: len(in.Acked), SendErrors: len(in.Failed), InputRecords: len(in.Input),
		OutputRecords: len(in.Output)}
	var f findings

	// The input topic against what the producer reported.
	stored := make(map[string]int, len(in.Input))
	for _, v := range in.Input {
		if stored[v]++; stored[v] == 2 {
			f.note("input duplicated", "%q is in the input topic more than once", v)
		}
		if stored[v] > 1 {
			r.InputDuplicated++
		}
	}
	acked := make(map[string]bool, len(in.Acked))
	for _, v := range in.Acked {
		acked[v] = true
		if stored[v] == 0 {
			r.InputLost++
			f.note("input lost", "%q was acknowledged and is not in the input topic", v)
		}
	}
	failed := map[string]bool{}
	for _, e := range in.Failed {
		failed[e.Value] = true
		if r.ErrorKinds == nil {
			r.ErrorKinds = map[string]int{}
		}
		r.ErrorKinds[errorKind(e)]++
	}
	for v := range stored {
		if !acked[v] {
			r.InputUnacked++
			why := "no answer reported"
			if failed[v] {
				why = "its send was reported failed"
			}
			f.note("input unacknowledged", "%q is in the input topic, %s", v, why)
		}
	}

	// What the input makes each word's count.
	want := map[string]int64{}
	for _, v := range in.Input {
		for _, w := range Words(v) {
			want[w]++
		}
	}
	r.Words = len(want)

	// The output: every count in order, per word.
	history := map[string][]int64{}
	for _, o := range in.Output {
		if len(o.Value) != 8 {
			r.Malformed++
			f.note("malformed count", "word %q at %d/%d: %d bytes, want 8", o.Key, o.Partition, o.Offset, len(o.Value))
			continue
		}
		history[o.Key] = append(history[o.Key], int64(binary.BigEndian.Uint64(o.Value)))
	}
	words := make([]string, 0, len(want))
	for w := range want {
		words = append(words, w)
	}
	sort.Strings(words)
	for _, w := range words {
		h := history[w]
		var got int64
		if len(h) > 0 {
			got = h[len(h)-1]
		}
		switch n := want[w]; {
		case got == n:
			r.Exact++
		case got > n:
			r.OverCounted++
			r.Duplicates += got - n
			f.note("over-counted", "word %q: counted %d, the input holds it %d times", w, got, n)
		default:
			r.UnderCounted++
			r.Lost += n - got
			if len(h) == 0 {
				r.Missing++
			}
			f.note("under-counted", "word %q: counted %d, the input holds it %d times", w, got, n)
		}
	}
	foreign := make([]string, 0)
	for w, h := range history {
		if _, ok := want[w]; !ok {
			foreign = append(foreign, fmt.Sprintf("word %q: counted %d, not in the input", w, h[len(h)-1]))
		}
		for i, c := range h {
			if c != int64(i)+1 {
				r.BrokenHistory++
				prev := "none"
				if i > 0 {
					prev = fmt.Sprint(h[i-1])
				}
				f.note("count history", "word %q: its count number %d in the output is %d (the one before: %s), want %d; %d counts in all",
					w, i+1, c, prev, i+1, len(h))
				break
			}
		}
	}
	sort.Strings(foreign)
	r.Foreign = len(foreign)
	for _, s := range foreign {
		f.note("foreign", "%s", s)
	}
	r.Problems = f.out
	return r
}

// errorKind names a send error for the report: the exception's class
// ("class org.apache.kafka.common.errors.NotEnoughReplicasException" →
// "NotEnoughReplicasException").
func errorKind(e SendError) string {
	k := e.Exception
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	return k
}
