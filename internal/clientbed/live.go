package clientbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Live mode: a client produces keyed records continuously and consumes in a
// consumer group with auto-commit, as an application does, until it is told
// to stop. It reports every acknowledged record, every record delivered to
// the consumer and every error the library surfaced, as they happen.
//
// The external programs (testclients/) speak it on their standard streams.
// They are started with
//
//	--mode live --bootstrap H:P --topic T --group G --keys K --prefix P --interval-ms MS
//
// produce record i (from 0) with key "k-<i mod K>" and value "<P>-<i>" one
// every MS milliseconds, and print one JSON event per line on stdout:
//
//	{"ev":"lib","library":"kafka-clients 4.4.0"}
//	{"ev":"ack","seq":7,"p":2,"o":41}                 a delivery report: record 7 is at 2/41
//	{"ev":"rec","p":2,"o":41,"k":"k-7","v":"java-0-7"} a record the consumer delivered
//	{"ev":"err","side":"produce","seq":9,"fatal":false,"msg":"..."}
//	{"ev":"produced","sent":812}                      after stop-produce: every report is in
//	{"ev":"done"}                                     after stop: closed, exiting
//
// side is "produce" (a delivery error, seq set, or a producer error
// callback, seq -1), "consume" (an error the consumer returned or called
// back with) or "client" (an error callback shared by both). They read
// commands on stdin, one per line: "stop-produce" stops sending and waits
// for every delivery report; "stop" (or end of input) closes the consumer
// — which commits its auto-commit position — and exits. Logs go to stderr.
//
// With
//
//	--transactional-id ID --txn-records N [--txn-abort-every M]
//
// (the clients TransactionalClients names) the producer is transactional
// instead: transactional.id ID, one transaction per N records, committed,
// except every M-th transaction (M > 0), which the application aborts once
// its records are written (flush, then abort). An "ack" is printed only for
// a record whose transaction committed, once the commit returned; the
// records of an aborted transaction are printed as
//
//	{"ev":"abort","seq":7,"p":2,"o":41}               record 7 was written at 2/41, then aborted
//
// and a transaction that fails to end gives one produce error per record.
// The consumer reads with isolation.level=read_committed.

// LiveSpec describes one live client instance.
type LiveSpec struct {
	// Bootstrap lists host:port seed addresses (a cluster, or a sidecar).
	Bootstrap []string
	// Topic is produced to and consumed from; it must exist.
	Topic string
	// Partitions is the topic's partition count (kcat's producer needs it
	// to tell which record a delivery report is about).
	Partitions int
	// Group is the consumer group, shared by the instances of a run.
	Group string
	// Prefix starts every value: unique per instance.
	Prefix string
	// Keys is the number of distinct keys; 0 means DefaultKeys.
	Keys int
	// Interval is the pause between two records; 0 means 5ms.
	Interval time.Duration
	// RetryBudget, when set, raises the producer's retries of a library
	// whose default retry budget is shorter than a cutover's gate (sarama:
	// 3 retries 100ms apart) to span at least this long; see SaramaRetries.
	// 0 keeps the library's defaults.
	RetryBudget time.Duration
	// TransactionalID, when set, makes the producer transactional (only
	// the clients TransactionalClients names): one transaction per
	// TxnRecords records (0 means DefaultTxnRecords), committed, except
	// every TxnAbortEvery-th one (0: none), which is aborted once its
	// records are written. The consumer then reads read_committed. It must
	// be unique per instance.
	TransactionalID string
	TxnRecords      int
	TxnAbortEvery   int
	// GroupProtocol is the consumer's group protocol: "" (classic, the
	// default) or GroupProtocolConsumer (KIP-848: the broker assigns,
	// ConsumerGroupHeartbeat; Kafka 4.0+). Only the clients
	// GroupShapeClients names.
	GroupProtocol string
	// InstanceID, when set, makes the consumer a static member
	// (group.instance.id); unique per instance. Only the clients
	// GroupShapeClients names.
	InstanceID string
}

// GroupProtocolConsumer is LiveSpec.GroupProtocol for KIP-848 groups.
const GroupProtocolConsumer = "consumer"

// GroupShapeClients returns the clients whose live mode can join a group
// with LiveSpec.GroupProtocol "consumer" and as a static member
// (LiveSpec.InstanceID).
func GroupShapeClients() []Client {
	return []Client{FranzGo, ConfluentKafkaPython, Java}
}

// DefaultTxnRecords is the records per transaction of a transactional live
// producer.
const DefaultTxnRecords = 20

// TransactionalClients returns the clients whose live mode has a
// transactional producer (LiveSpec.TransactionalID).
func TransactionalClients() []Client {
	return []Client{ConfluentKafkaPython, Java}
}

func (s LiveSpec) withDefaults() LiveSpec {
	if s.Keys == 0 {
		s.Keys = DefaultKeys
	}
	if s.Interval == 0 {
		s.Interval = 5 * time.Millisecond
	}
	if s.TransactionalID != "" && s.TxnRecords == 0 {
		s.TxnRecords = DefaultTxnRecords
	}
	return s
}

func (s LiveSpec) check() error {
	var errs []error
	if len(s.Bootstrap) == 0 {
		errs = append(errs, errors.New("no bootstrap address"))
	}
	if s.Topic == "" || s.Group == "" || s.Prefix == "" {
		errs = append(errs, errors.New("topic, group and prefix are required"))
	}
	if s.Keys < 1 || s.Interval <= 0 {
		errs = append(errs, fmt.Errorf("keys %d, interval %v: want positive", s.Keys, s.Interval))
	}
	if s.TransactionalID != "" && (s.TxnRecords < 1 || s.TxnAbortEvery < 0) {
		errs = append(errs, fmt.Errorf("txn records %d, abort every %d: want positive, and not negative", s.TxnRecords, s.TxnAbortEvery))
	}
	return errors.Join(errs...)
}

func (s LiveSpec) key(seq int) string   { return fmt.Sprintf("k-%d", seq%s.Keys) }
func (s LiveSpec) value(seq int) string { return fmt.Sprintf("%s-%d", s.Prefix, seq) }

// Error sides of a LiveError.
const (
	SideProduce = "produce"
	SideConsume = "consume"
	SideClient  = "client"
)

// LiveError is one error a client library surfaced to the application.
type LiveError struct {
	Side string `json:"side"`
	// Seq is the record a delivery error is about, -1 for other errors.
	Seq   int    `json:"seq"`
	Fatal bool   `json:"fatal"`
	Msg   string `json:"msg"`
}

func (e LiveError) String() string {
	s := e.Side
	if e.Seq >= 0 {
		s += fmt.Sprintf(" seq %d", e.Seq)
	}
	if e.Fatal {
		s += " (fatal)"
	}
	return s + ": " + e.Msg
}

// LiveRecord is one record the consumer delivered to the application.
type LiveRecord struct {
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
	Key       string `json:"k"`
	Value     string `json:"v"`
}

// LiveReport is what a live instance reported so far.
type LiveReport struct {
	Client  Client
	Library string
	Spec    LiveSpec
	// Acks are the acknowledged records, in the order reported (for a
	// transactional producer: the records of committed transactions).
	Acks []Ack
	// Aborted are the records of the transactions the application aborted,
	// where their delivery reports placed them (transactional producers).
	Aborted []Ack
	// Records are the consumed records, in the order delivered.
	Records []LiveRecord
	Errors  []LiveError
	// Sent is the number of records handed to the producer (known once
	// production stopped).
	Sent int
	// Log is the tail of the client's log (stderr of a program).
	Log string
}

// liveEvent is one line of a program's stdout.
type liveEvent struct {
	Ev      string `json:"ev"`
	Library string `json:"library"`
	Seq     *int   `json:"seq"`
	P       int32  `json:"p"`
	O       int64  `json:"o"`
	K       string `json:"k"`
	V       string `json:"v"`
	Side    string `json:"side"`
	Fatal   bool   `json:"fatal"`
	Msg     string `json:"msg"`
	Sent    int    `json:"sent"`
}

// Live is a running live instance. Its methods are safe for concurrent use.
type Live struct {
	client Client
	spec   LiveSpec
	log    *tail

	mu       sync.Mutex
	rep      LiveReport
	produced chan struct{} // closed when every delivery report is in
	prodOnce sync.Once

	// stopProduce asks the producer to stop; stop asks the whole instance
	// to stop; done is closed once it has.
	stopProduce func()
	stop        func()
	done        chan struct{}
	runErr      error // set before done closes
}

func newLive(c Client, spec LiveSpec) *Live {
	l := &Live{client: c, spec: spec, log: newTail(256 << 10), produced: make(chan struct{}), done: make(chan struct{})}
	l.rep = LiveReport{Client: c, Spec: spec, Acks: []Ack{}, Aborted: []Ack{}, Records: []LiveRecord{}, Errors: []LiveError{}}
	return l
}

// StartLive starts client c in live mode; it runs until Stop, or until ctx
// ends (then it is killed). The instance has started once StartLive
// returns; whether it connects is for its events to tell.
func StartLive(ctx context.Context, c Client, spec LiveSpec) (*Live, error) {
	spec = spec.withDefaults()
	if err := spec.check(); err != nil {
		return nil, fmt.Errorf("%s: live spec: %w", c, err)
	}
	if err := Available(c); err != nil {
		return nil, err
	}
	if spec.TransactionalID != "" && !slices.Contains(TransactionalClients(), c) {
		return nil, fmt.Errorf("%s: no transactional live mode (clients with one: %v)", c, TransactionalClients())
	}
	switch c {
	case FranzGo:
		return startFranzLive(ctx, spec)
	case Sarama:
		return startSaramaLive(ctx, spec)
	case Kcat:
		return startKcatLive(ctx, spec)
	case ConfluentKafkaPython, KafkaJS, Java:
		return startProgramLive(ctx, c, spec)
	}
	return nil, fmt.Errorf("%s: unknown client", c)
}

// Counts returns how many records were acknowledged and consumed so far.
func (l *Live) Counts() (acked, consumed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rep.Acks), len(l.rep.Records)
}

// Report returns a copy of what the instance reported so far.
func (l *Live) Report() LiveReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rep
	r.Acks = append([]Ack(nil), r.Acks...)
	r.Aborted = append([]Ack(nil), r.Aborted...)
	r.Records = append([]LiveRecord(nil), r.Records...)
	r.Errors = append([]LiveError(nil), r.Errors...)
	r.Log = l.log.String()
	return r
}

// StopProducing stops the producer and blocks until every record it sent
// has its delivery report, the instance exits, or ctx ends.
func (l *Live) StopProducing(ctx context.Context) error {
	l.stopProduce()
	select {
	case <-l.produced:
		return nil
	case <-l.done:
		return fmt.Errorf("%s %s exited before its producer flushed: %v", l.client, l.spec.Prefix, l.runErr)
	case <-ctx.Done():
		return fmt.Errorf("%s %s: wait for the producer to flush: %w", l.client, l.spec.Prefix, ctx.Err())
	}
}

// Stop stops the instance (the consumer closes, committing its position)
// and blocks until it has exited or ctx ends; then it returns the report.
// An error means the instance did not stop cleanly.
func (l *Live) Stop(ctx context.Context) (LiveReport, error) {
	l.stop()
	select {
	case <-l.done:
		return l.Report(), l.runErr
	case <-ctx.Done():
		return l.Report(), fmt.Errorf("%s %s: wait for it to stop: %w", l.client, l.spec.Prefix, ctx.Err())
	}
}

// Done is closed once the instance has exited.
func (l *Live) Done() <-chan struct{} { return l.done }

func (l *Live) addAck(a Ack) {
	l.mu.Lock()
	l.rep.Acks = append(l.rep.Acks, a)
	l.mu.Unlock()
}

func (l *Live) addAborted(a Ack) {
	l.mu.Lock()
	l.rep.Aborted = append(l.rep.Aborted, a)
	l.mu.Unlock()
}

func (l *Live) addRecord(r LiveRecord) {
	l.mu.Lock()
	l.rep.Records = append(l.rep.Records, r)
	l.mu.Unlock()
}

func (l *Live) addError(e LiveError) {
	l.mu.Lock()
	l.rep.Errors = append(l.rep.Errors, e)
	l.mu.Unlock()
}

func (l *Live) setLibrary(s string) {
	l.mu.Lock()
	l.rep.Library = s
	l.mu.Unlock()
}

func (l *Live) markProduced(sent int) {
	l.mu.Lock()
	l.rep.Sent = sent
	l.mu.Unlock()
	l.prodOnce.Do(func() { close(l.produced) })
}

// finish records how the instance ended and closes done.
func (l *Live) finish(err error) {
	l.runErr = err
	close(l.done)
}

// apply takes one event line of a program.
func (l *Live) apply(line []byte) error {
	var ev liveEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return fmt.Errorf("event %q: %w", line, err)
	}
	switch ev.Ev {
	case "lib":
		l.setLibrary(ev.Library)
	case "ack":
		if ev.Seq == nil {
			return fmt.Errorf("ack without seq: %q", line)
		}
		l.addAck(Ack{Seq: *ev.Seq, Partition: ev.P, Offset: ev.O})
	case "abort":
		if ev.Seq == nil {
			return fmt.Errorf("abort without seq: %q", line)
		}
		l.addAborted(Ack{Seq: *ev.Seq, Partition: ev.P, Offset: ev.O})
	case "rec":
		l.addRecord(LiveRecord{Partition: ev.P, Offset: ev.O, Key: ev.K, Value: ev.V})
	case "err":
		e := LiveError{Side: ev.Side, Seq: -1, Fatal: ev.Fatal, Msg: ev.Msg}
		if ev.Seq != nil {
			e.Seq = *ev.Seq
		}
		l.addError(e)
	case "produced":
		l.markProduced(ev.Sent)
	case "done":
	default:
		return fmt.Errorf("unknown event %q", line)
	}
	return nil
}

// liveArgs is the command line of an external program in live mode.
func liveArgs(spec LiveSpec) []string {
	args := []string{"--mode", "live",
		"--bootstrap", strings.Join(spec.Bootstrap, ","),
		"--topic", spec.Topic,
		"--group", spec.Group,
		"--keys", strconv.Itoa(spec.Keys),
		"--prefix", spec.Prefix,
		"--interval-ms", strconv.FormatInt(max(1, spec.Interval.Milliseconds()), 10),
	}
	if spec.TransactionalID != "" {
		args = append(args, "--transactional-id", spec.TransactionalID,
			"--txn-records", strconv.Itoa(spec.TxnRecords),
			"--txn-abort-every", strconv.Itoa(spec.TxnAbortEvery))
	}
	if spec.GroupProtocol != "" {
		args = append(args, "--group-protocol", spec.GroupProtocol)
	}
	if spec.InstanceID != "" {
		args = append(args, "--instance-id", spec.InstanceID)
	}
	return args
}

// startProgramLive runs an external client program in live mode. Its
// stdout events are applied as they arrive; commands go to its stdin.
func startProgramLive(ctx context.Context, c Client, spec LiveSpec) (*Live, error) {
	dir, err := testclientsDir()
	if err != nil {
		return nil, err
	}
	argv := programArgv(c, dir)
	l := newLive(c, spec)
	cmd := exec.CommandContext(ctx, argv[0], append(append([]string(nil), argv[1:]...), liveArgs(spec)...)...)
	cmd.Dir = dir
	cmd.Stderr = l.log
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: stdin pipe: %w", c, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: stdout pipe: %w", c, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", c, argv[0], err)
	}
	var cmdMu sync.Mutex
	send := func(command string) {
		cmdMu.Lock()
		defer cmdMu.Unlock()
		// A program that already exited has closed its stdin: nothing to tell.
		_, _ = io.WriteString(stdin, command+"\n")
	}
	var stopOnce sync.Once
	l.stopProduce = func() { send("stop-produce") }
	l.stop = func() {
		stopOnce.Do(func() {
			send("stop")
			cmdMu.Lock()
			_ = stdin.Close()
			cmdMu.Unlock()
		})
	}
	go func() {
		var parseErr error
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if len(strings.TrimSpace(sc.Text())) == 0 {
				continue
			}
			if err := l.apply(sc.Bytes()); err != nil && parseErr == nil {
				parseErr = err
			}
		}
		// Drain what is left so the program never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, stdout)
		err := cmd.Wait()
		switch {
		case err != nil:
			err = fmt.Errorf("%s %s: %w%s", c, spec.Prefix, err, stderrTail(l.log.String()))
		case parseErr != nil:
			err = fmt.Errorf("%s %s: %w", c, spec.Prefix, parseErr)
		}
		l.finish(err)
	}()
	return l, nil
}
