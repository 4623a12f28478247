package streamsbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// ProducerSpec describes a VerifiableProducer run.
type ProducerSpec struct {
	Lib Lib
	// Bootstrap is the address it connects to (a sidecar).
	Bootstrap string
	// Topic defaults to InputTopic.
	Topic string
	// ValuePrefix starts every value: "<ValuePrefix>.<n>". Positive, so that
	// no value starts with a non-word character.
	ValuePrefix int
	// Throughput is the records per second (VerifiableProducer's
	// --throughput); positive.
	Throughput int
	// Dir receives the producer's files; Name names them and the process.
	Dir, Name string
}

// SendError is a send VerifiableProducer reported failed.
type SendError struct {
	Value     string `json:"value"`
	Exception string `json:"exception"`
	Message   string `json:"message"`
}

func (e SendError) String() string { return fmt.Sprintf("%s: %s: %s", e.Value, e.Exception, e.Message) }

// ProducerReport is what a VerifiableProducer reported.
type ProducerReport struct {
	// Acked are the values acknowledged, in the order reported.
	Acked []string
	// Failed are the sends reported failed.
	Failed []SendError
	// Sent and ToolAcked are its own totals, printed at shutdown
	// (tool_data); -1 until then.
	Sent, ToolAcked int64
	// Unparsed counts stdout lines that were not its JSON events.
	Unparsed int
}

// Producer is a running VerifiableProducer. Its methods are safe for
// concurrent use.
type Producer struct {
	spec ProducerSpec
	j    *jvm

	mu  sync.Mutex
	rep ProducerReport
}

// StartProducer starts Kafka's VerifiableProducer (org.apache.kafka.tools,
// retries=0, acks=all, no key) producing spec.Throughput records a second
// until Stop.
func StartProducer(spec ProducerSpec) (*Producer, error) {
	if spec.Topic == "" {
		spec.Topic = InputTopic
	}
	if spec.ValuePrefix < 1 || spec.Throughput < 1 || spec.Bootstrap == "" || spec.Dir == "" || spec.Name == "" {
		return nil, fmt.Errorf("producer spec %+v: want a bootstrap, a dir, a name, a positive value prefix and throughput", spec)
	}
	p := &Producer{spec: spec, rep: ProducerReport{Acked: []string{}, Failed: []SendError{}, Sent: -1, ToolAcked: -1}}
	events, err := os.Create(filepath.Join(spec.Dir, spec.Name+".events"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	// exec copies the output into both until the JVM exits; events is
	// closed once it has.
	out := io.MultiWriter(events, &lines{line: p.apply})
	j, err := startJVM(spec.Lib, spec.Dir, spec.Name, out, "org.apache.kafka.tools.VerifiableProducer",
		"--bootstrap-server", spec.Bootstrap, "--topic", spec.Topic,
		"--value-prefix", strconv.Itoa(spec.ValuePrefix), "--throughput", strconv.Itoa(spec.Throughput), "--max-messages", "-1")
	if err != nil {
		events.Close()
		return nil, err
	}
	p.j = j
	go func() {
		<-j.done
		events.Close()
	}()
	return p, nil
}

// lines is an io.Writer calling line for every complete line written. exec
// copies a program's output into it from one goroutine.
type lines struct {
	line    func([]byte)
	partial []byte
}

func (l *lines) Write(b []byte) (int, error) {
	n := len(b)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		if len(l.partial) > 0 {
			l.line(append(l.partial, b[:i]...))
			l.partial = l.partial[:0]
		} else {
			l.line(b[:i])
		}
		b = b[i+1:]
	}
	l.partial = append(l.partial, b...)
	return n, nil
}

// event is one JSON line of VerifiableProducer's stdout.
type event struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Exception string `json:"exception"`
	Message   string `json:"message"`
	Sent      int64  `json:"sent"`
	Acked     int64  `json:"acked"`
}

func (p *Producer) apply(line []byte) {
	var ev event
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := json.Unmarshal(line, &ev); err != nil {
		p.rep.Unparsed++
		return
	}
	switch ev.Name {
	case "producer_send_success":
		p.rep.Acked = append(p.rep.Acked, ev.Value)
	case "producer_send_error":
		p.rep.Failed = append(p.rep.Failed, SendError{Value: ev.Value, Exception: ev.Exception, Message: ev.Message})
	case "tool_data":
		p.rep.Sent, p.rep.ToolAcked = ev.Sent, ev.Acked
	case "startup_complete", "shutdown_complete":
	default:
		p.rep.Unparsed++
	}
}

// Counts returns the sends acknowledged and failed so far.
func (p *Producer) Counts() (acked, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.rep.Acked), len(p.rep.Failed)
}

// Report returns a copy of what it reported so far.
func (p *Producer) Report() ProducerReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rep
	r.Acked = append([]string(nil), r.Acked...)
	r.Failed = append([]SendError(nil), r.Failed...)
	return r
}

// Exited reports whether the JVM exited, and how.
func (p *Producer) Exited() (bool, error) { return p.j.exited() }

// Stop stops it with SIGTERM: its shutdown hook closes the producer, which
// waits for every send's answer, then prints its totals. Stop returns once
// the JVM exited and its output is read, or at ctx's end (then it is
// killed). The report is complete when the error is nil.
func (p *Producer) Stop(ctx context.Context) (ProducerReport, error) {
	err := p.j.stop(ctx)
	rep := p.Report()
	if err == nil && rep.Sent < 0 {
		err = fmt.Errorf("%s exited without printing its totals (tool_data); stderr in %s", p.spec.Name, p.j.Stderr)
	}
	return rep, err
}

// Kill stops it with SIGKILL, when a test ends early.
func (p *Producer) Kill() { p.j.kill() }

// Files names its log and standard error files; its standard output, the
// JSON events, is in Dir/Name.events.
func (p *Producer) Files() (log, stderr string) { return p.j.Log, p.j.Stderr }
