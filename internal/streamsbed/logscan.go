package streamsbed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// LogSummary is what a Streams instance's log says it did.
type LogSummary struct {
	// State is the Streams client's last state (KafkaStreams.State:
	// CREATED, REBALANCING, RUNNING, PENDING_SHUTDOWN, NOT_RUNNING,
	// PENDING_ERROR, ERROR); "" before its first transition.
	State string
	// Transitions counts the client's transitions into each state.
	Transitions map[string]int
	// Lost counts the times its thread lost its partitions (a missed
	// rebalance: "partitions ... lost due to missed rebalance"); Streams
	// then closes its active tasks dirty.
	Lost int
	// Wiped lists the tasks whose state directory was wiped ("active 0_1"):
	// a dirty close under exactly-once, or a corrupted task.
	Wiped []string
	// RestoredFromStart lists the changelog partitions restored from the
	// beginning (no checkpoint); RestoredFromOffset those restored from a
	// checkpointed offset ("partition from N").
	RestoredFromStart, RestoredFromOffset []string
	// RestoredRecords sums the records restored into stores.
	RestoredRecords int64
	// Corrupted counts warnings of tasks found corrupted.
	Corrupted int
	// Errors and Warnings count lines logged at ERROR and WARN;
	// FirstErrors holds the first few ERROR lines.
	Errors, Warnings int
	FirstErrors      []string
}

// Failed reports whether the client reached an error state.
func (s LogSummary) Failed() bool {
	return s.Transitions["ERROR"]+s.Transitions["PENDING_ERROR"] > 0
}

func (s LogSummary) String() string {
	return fmt.Sprintf("state %s (running %d times, rebalancing %d), partitions lost %d, stores wiped %d %v, "+
		"restored from the beginning %d %v, from a checkpoint %d %v, %d records restored, corrupted %d, errors %d, warnings %d",
		s.State, s.Transitions["RUNNING"], s.Transitions["REBALANCING"], s.Lost, len(s.Wiped), s.Wiped,
		len(s.RestoredFromStart), s.RestoredFromStart, len(s.RestoredFromOffset), s.RestoredFromOffset,
		s.RestoredRecords, s.Corrupted, s.Errors, s.Warnings)
}

// The lines scanned, as Kafka Streams 4.3 and 3.9 write them (the format
// of the log config in jvm.go: "[date] LEVEL message (logger)").
var (
	reLevel       = regexp.MustCompile(`^\[[^\]]*\] (ERROR|WARN) `)
	reTransition  = regexp.MustCompile(`stream-client \[[^\]]*\] State transition from (\w+) to (\w+)`)
	reLost        = regexp.MustCompile(`lost due to missed rebalance`)
	reWipe        = regexp.MustCompile(`Wiping state stores for (\w+) task (\S+)`)
	reFromStart   = regexp.MustCompile(`Start restoring changelog partition (\S+) from the beginning offset`)
	reFromOffset  = regexp.MustCompile(`Start restoring changelog partition (\S+) from current offset (\d+)`)
	reRestoreDone = regexp.MustCompile(`Finished restoring changelog \S+ to store \S+ with a total number of (\d+) records`)
	reCorrupted   = regexp.MustCompile(`(?i)corrupted`)
)

// maxFirstErrors bounds LogSummary.FirstErrors.
const maxFirstErrors = 5

// logScan reads a log file incrementally.
type logScan struct {
	path string

	mu      sync.Mutex
	off     int64
	partial []byte
	sum     LogSummary
}

// update reads what the file gained and returns the summary so far. A file
// not created yet is an empty log.
func (l *logScan) update() (LogSummary, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return l.sum.clone(), nil
	}
	if err != nil {
		return l.sum.clone(), fmt.Errorf("read streams log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return l.sum.clone(), fmt.Errorf("read streams log %s: %w", l.path, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return l.sum.clone(), fmt.Errorf("read streams log %s: %w", l.path, err)
	}
	l.off += int64(len(b))
	b = append(l.partial, b...)
	last := bytes.LastIndexByte(b, '\n')
	if last < 0 {
		l.partial = b
		return l.sum.clone(), nil
	}
	for _, line := range strings.Split(string(b[:last]), "\n") {
		l.sum.scan(line)
	}
	l.partial = append([]byte(nil), b[last+1:]...)
	return l.sum.clone(), nil
}

// scan takes one line of the log into the summary.
func (s *LogSummary) scan(line string) {
	if m := reLevel.FindStringSubmatch(line); m != nil {
		if m[1] == "ERROR" {
			s.Errors++
			if len(s.FirstErrors) < maxFirstErrors {
				s.FirstErrors = append(s.FirstErrors, line)
			}
		} else {
			s.Warnings++
			if reCorrupted.MatchString(line) {
				s.Corrupted++
			}
		}
	}
	if m := reTransition.FindStringSubmatch(line); m != nil {
		if s.Transitions == nil {
			s.Transitions = map[string]int{}
		}
		s.State = m[2]
		s.Transitions[m[2]]++
	}
	if reLost.MatchString(line) {
		s.Lost++
	}
	if m := reWipe.FindStringSubmatch(line); m != nil {
		s.Wiped = append(s.Wiped, strings.ToLower(m[1])+" "+m[2])
	}
	if m := reFromStart.FindStringSubmatch(line); m != nil {
		s.RestoredFromStart = append(s.RestoredFromStart, m[1])
	}
	if m := reFromOffset.FindStringSubmatch(line); m != nil {
		s.RestoredFromOffset = append(s.RestoredFromOffset, m[1]+" from "+m[2])
	}
	if m := reRestoreDone.FindStringSubmatch(line); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		s.RestoredRecords += n
	}
}

func (s LogSummary) clone() LogSummary {
	c := s
	c.Transitions = make(map[string]int, len(s.Transitions))
	for k, v := range s.Transitions {
		c.Transitions[k] = v
	}
	c.Wiped = append([]string(nil), s.Wiped...)
	c.RestoredFromStart = append([]string(nil), s.RestoredFromStart...)
	c.RestoredFromOffset = append([]string(nil), s.RestoredFromOffset...)
	c.FirstErrors = append([]string(nil), s.FirstErrors...)
	return c
}
