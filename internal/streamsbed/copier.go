package streamsbed

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// CopierSpec describes a TransactionalMessageCopier run: Apache Kafka's own
// exactly-once consume-transform-produce program (org.apache.kafka.tools,
// the one Kafka's system tests move between brokers). In group mode it
// subscribes to Input in consumer group Group, copies every record to the
// same partition of Output and commits the consumed offsets inside each
// transaction (sendOffsetsToTransaction with the consumer's group
// metadata), read_committed. It exits when it has processed what its
// partitions held when they were last assigned.
type CopierSpec struct {
	Lib Lib
	// Bootstrap is the address it connects to (a sidecar).
	Bootstrap string
	// Input and Output are its topics; Output has at least Input's
	// partitions.
	Input, Output string
	// Group is its consumer group; TransactionalID its producer's
	// transactional.id.
	Group, TransactionalID string
	// TransactionSize is the most records per transaction (its
	// max.poll.records too); 0 means 200, the tool's default.
	TransactionSize int
	// Dir receives its files; Name names them and the process.
	Dir, Name string
}

// CopierStatus is what a TransactionalMessageCopier last printed.
type CopierStatus struct {
	// Stage is its last status: RebalanceComplete, ProcessLoop or
	// ShutdownComplete.
	Stage string
	// Processed counts the records of its committed transactions;
	// Remaining what it still means to process of its assignment.
	Processed, Remaining int64
	// Rebalances counts the assignments it was given.
	Rebalances int
}

// Copier is a running TransactionalMessageCopier. Its methods are safe for
// concurrent use.
type Copier struct {
	spec CopierSpec
	j    *jvm

	mu sync.Mutex
	st CopierStatus
}

// StartCopier starts a TransactionalMessageCopier in group mode.
func StartCopier(spec CopierSpec) (*Copier, error) {
	if spec.Bootstrap == "" || spec.Input == "" || spec.Output == "" || spec.Group == "" || spec.TransactionalID == "" ||
		spec.Dir == "" || spec.Name == "" {
		return nil, fmt.Errorf("copier spec %+v: want a bootstrap, input and output topics, a group, a transactional id, a dir and a name", spec)
	}
	if spec.TransactionSize == 0 {
		spec.TransactionSize = 200
	}
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("copier %s: %w", spec.Name, err)
	}
	c := &Copier{spec: spec}
	events, err := os.Create(filepath.Join(spec.Dir, spec.Name+".events"))
	if err != nil {
		return nil, fmt.Errorf("copier %s: %w", spec.Name, err)
	}
	out := &lines{line: func(b []byte) {
		_, _ = events.Write(append(b, '\n'))
		c.apply(b)
	}}
	j, err := startJVM(spec.Lib, spec.Dir, spec.Name, out, "org.apache.kafka.tools.TransactionalMessageCopier",
		"--broker-list", spec.Bootstrap, "--input-topic", spec.Input, "--input-partition", "0", "--output-topic", spec.Output,
		"--consumer-group", spec.Group, "--transactional-id", spec.TransactionalID,
		"--transaction-size", strconv.Itoa(spec.TransactionSize), "--group-mode", "--use-group-metadata")
	if err != nil {
		events.Close()
		return nil, err
	}
	c.j = j
	go func() {
		<-j.done
		events.Close()
	}()
	return c, nil
}

// copierEvent is one JSON line of its standard output.
type copierEvent struct {
	Stage          string `json:"stage"`
	TotalProcessed int64  `json:"totalProcessed"`
	Remaining      int64  `json:"remaining"`
}

func (c *Copier) apply(line []byte) {
	var ev copierEvent
	if err := json.Unmarshal(line, &ev); err != nil || ev.Stage == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Stage, c.st.Processed, c.st.Remaining = ev.Stage, ev.TotalProcessed, ev.Remaining
	if ev.Stage == "RebalanceComplete" {
		c.st.Rebalances++
	}
}

// Status returns what it last printed.
func (c *Copier) Status() CopierStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Exited reports whether the JVM exited, and how.
func (c *Copier) Exited() (bool, error) { return c.j.exited() }

// Wait waits for it to exit by itself, killing it at ctx's end.
func (c *Copier) Wait(ctx context.Context) error {
	select {
	case <-c.j.done:
		return c.j.err
	case <-ctx.Done():
		c.j.kill()
		return fmt.Errorf("%s did not finish (%w): killed", c.spec.Name, ctx.Err())
	}
}

// Kill ends it with SIGKILL.
func (c *Copier) Kill() { c.j.kill() }

// Files names its log and standard error files; its standard output, the
// JSON status lines, is in Dir/Name.events.
func (c *Copier) Files() (log, stderr string) { return c.j.Log, c.j.Stderr }

// CopyResult is what CheckCopy found.
type CopyResult struct {
	// Acked counts the input values acknowledged; Output the records read
	// from the output topic.
	Acked, Output int
	// Missing counts acknowledged values not in the output; Duplicated the
	// output records beyond the first of a value; Unknown the output values
	// the input never sent. Each breaks exactly-once.
	Missing, Duplicated, Unknown int
	// FailedCopied counts values whose send was reported failed that
	// reached the output anyway (retries=0: the broker may have written a
	// record whose answer the client did not get). Not an error.
	FailedCopied int
	// Problems names the first few of each.
	Problems []string
}

// Failed reports whether the copy broke exactly-once.
func (r CopyResult) Failed() bool { return r.Missing+r.Duplicated+r.Unknown > 0 }

func (r CopyResult) String() string {
	return fmt.Sprintf("input acked %d, output %d: missing %d, duplicated %d, unknown %d (failed sends copied %d)",
		r.Acked, r.Output, r.Missing, r.Duplicated, r.Unknown, r.FailedCopied)
}

// CheckCopy holds a copier's output (read_committed) to exactly-once
// against its input: every acknowledged value exactly once, nothing else
// but values whose send was reported failed, at most once each.
func CheckCopy(acked []string, failed []SendError, output []string) CopyResult {
	r := CopyResult{Acked: len(acked), Output: len(output)}
	f := &findings{}
	count := make(map[string]int, len(output))
	for _, v := range output {
		count[v]++
	}
	wasFailed := make(map[string]bool, len(failed))
	for _, e := range failed {
		wasFailed[e.Value] = true
	}
	known := make(map[string]bool, len(acked))
	for _, v := range acked {
		known[v] = true
		if count[v] == 0 {
			r.Missing++
			f.note("missing", "acknowledged %s is not in the output", v)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(count)) {
		n := count[v]
		if n > 1 {
			r.Duplicated += n - 1
			f.note("duplicated", "%s is in the output %d times", v, n)
		}
		switch {
		case known[v]:
		case wasFailed[v]:
			r.FailedCopied++
		default:
			r.Unknown++
			f.note("unknown", "%s is in the output but was never sent", v)
		}
	}
	r.Problems = f.out
	return r
}
