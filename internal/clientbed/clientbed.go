package clientbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
)

// Client names one Kafka client library.
type Client string

// The clients of the bed.
const (
	FranzGo              Client = "franz-go"
	Sarama               Client = "sarama"
	Kcat                 Client = "kcat"
	ConfluentKafkaPython Client = "confluent-kafka-python"
	KafkaJS              Client = "kafkajs"
	Java                 Client = "java"
)

// Clients returns every client of the bed, in-process ones first.
func Clients() []Client {
	return []Client{FranzGo, Sarama, Kcat, ConfluentKafkaPython, KafkaJS, Java}
}

// Mode says what a run does.
type Mode string

// Modes of a run. ModeBoth produces the records, then consumes them.
const (
	ModeProduce Mode = "produce"
	ModeConsume Mode = "consume"
	ModeBoth    Mode = "both"
)

// Produces reports whether the mode produces records.
func (m Mode) Produces() bool { return m == ModeProduce || m == ModeBoth }

// Consumes reports whether the mode consumes records.
func (m Mode) Consumes() bool { return m == ModeConsume || m == ModeBoth }

// Defaults applied by Run and Verify to a zero Spec field.
const (
	DefaultKeys    = 10
	DefaultTimeout = 60 * time.Second
)

// Spec describes one run of a client.
type Spec struct {
	// Bootstrap lists host:port seed addresses (a cluster, or a proxy).
	Bootstrap []string
	// Topic is produced to and consumed from. It should be fresh: Verify
	// expects the topic to hold exactly the records of this run.
	Topic string
	// Group is the consumer group; "" means "clientbed-<topic>-<client>".
	Group string
	// Records is the number of records produced (and expected).
	Records int
	// Keys is the number of distinct keys (record i has key "k-<i mod Keys>");
	// 0 means DefaultKeys.
	Keys int
	// Mode is what the run does; "" means ModeBoth.
	Mode Mode
	// Timeout bounds the client's work (produce and consume together); the
	// process gets a little more to start and shut down. 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// Prefix starts every value ("<prefix>-<i>") and is the value of the
	// "client" header; "" means the producing client's name. Set it when one
	// client consumes what another produced.
	Prefix string
}

// normalize fills the defaults for client c and checks the spec.
func (s Spec) normalize(c Client) (Spec, error) {
	s = s.withDefaults(c)
	if err := s.check(); err != nil {
		return s, fmt.Errorf("spec: %w", err)
	}
	return s, nil
}

// withDefaults fills the zero fields that have a default for client c.
func (s Spec) withDefaults(c Client) Spec {
	if s.Keys == 0 {
		s.Keys = DefaultKeys
	}
	if s.Mode == "" {
		s.Mode = ModeBoth
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Prefix == "" {
		s.Prefix = string(c)
	}
	if s.Group == "" {
		s.Group = fmt.Sprintf("clientbed-%s-%s", s.Topic, c)
	}
	return s
}

// check reports what makes the spec unusable.
func (s Spec) check() error {
	var errs []error
	if len(s.Bootstrap) == 0 {
		errs = append(errs, errors.New("no bootstrap address"))
	}
	if s.Topic == "" {
		errs = append(errs, errors.New("no topic"))
	}
	if s.Records < 1 {
		errs = append(errs, fmt.Errorf("records %d: want at least 1", s.Records))
	}
	if s.Keys < 1 {
		errs = append(errs, fmt.Errorf("keys %d: want at least 1", s.Keys))
	}
	if !s.Mode.Produces() && !s.Mode.Consumes() {
		errs = append(errs, fmt.Errorf("mode %q: want produce, consume or both", s.Mode))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: want positive", s.Timeout))
	}
	if strings.ContainsAny(s.Prefix, "=\n") {
		errs = append(errs, fmt.Errorf("prefix %q: must not contain '=' or a newline", s.Prefix))
	}
	return errors.Join(errs...)
}

// key, value and headers of record seq: the recipe every client follows.
func (s Spec) key(seq int) string   { return fmt.Sprintf("k-%d", seq%s.Keys) }
func (s Spec) value(seq int) string { return fmt.Sprintf("%s-%d", s.Prefix, seq) }
func (s Spec) headers(seq int) []Header {
	return []Header{{Key: "seq", Value: fmt.Sprint(seq)}, {Key: "client", Value: s.Prefix}}
}

// Result is what one run reported. The JSON form is the one the external
// client programs print (see testclients/README.md), plus Broker.
type Result struct {
	Client Client `json:"client"`
	// Library names the library and version that ran, e.g. "kafka-clients 4.4.0".
	Library string         `json:"library"`
	Produce *ProduceResult `json:"produce,omitempty"`
	Consume *ConsumeResult `json:"consume,omitempty"`
	// Broker is what the cluster said after the client finished, read by Run
	// with an admin client; nil if not read.
	Broker *BrokerState `json:"broker,omitempty"`
	// BrokerError says why Run could not read Broker.
	BrokerError string `json:"broker_error,omitempty"`
	// Elapsed is the wall time of the whole run.
	Elapsed time.Duration `json:"-"`
	// Log is the tail of an external client's stderr.
	Log string `json:"-"`
}

// ProduceResult is the producer's report.
type ProduceResult struct {
	// Prefix is the value prefix the producer used.
	Prefix string `json:"prefix"`
	// Acked counts records the cluster acknowledged.
	Acked int `json:"acked"`
	// Errors lists every delivery error and any other producer error.
	Errors []string `json:"errors"`
	// Acks says where each acknowledged record landed, for clients that tell.
	Acks      []Ack `json:"acks,omitempty"`
	ElapsedMS int64 `json:"elapsed_ms"`
}

// Ack is one acknowledged record.
type Ack struct {
	Seq       int   `json:"seq"`
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ConsumeResult is the consumer's report.
type ConsumeResult struct {
	// Records are the records in the order the consumer delivered them.
	Records []Record `json:"records"`
	// Errors lists every consumer error, commit errors included.
	Errors []string `json:"errors"`
	// Committed is true when the client's final commit succeeded.
	Committed bool `json:"committed"`
	// TimedOut is true when the deadline came before Records records.
	TimedOut  bool  `json:"timed_out"`
	ElapsedMS int64 `json:"elapsed_ms"`
}

// Record is one consumed record. A nil Key or Value is a null one.
type Record struct {
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       *string  `json:"key"`
	Value     *string  `json:"value"`
	Headers   []Header `json:"headers"`
}

// Header is one record header; a null value reads as "".
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// BrokerState is what the cluster reports about the topic and group after a
// run: offsets by partition.
type BrokerState struct {
	Start map[int32]int64 `json:"start"`
	End   map[int32]int64 `json:"end"`
	// Committed holds the group's committed offsets; nil for a produce-only run.
	Committed map[int32]int64 `json:"committed,omitempty"`
}

// runGrace is what a client gets on top of Spec.Timeout to start (a JVM),
// commit and shut down.
const runGrace = 30 * time.Second

// Run runs client c as spec says and reports what it saw. Then, unless the
// client failed to run, it reads the topic's offsets (and the group's
// committed offsets) from the cluster into Result.Broker (or, failing that,
// Result.BrokerError). An error means the client could not run or its report
// was unreadable; problems with the data are in the Result, for Verify.
func Run(ctx context.Context, c Client, spec Spec) (Result, error) {
	spec, err := spec.normalize(c)
	if err != nil {
		return Result{Client: c}, fmt.Errorf("%s: %w", c, err)
	}
	if err := Available(c); err != nil {
		return Result{Client: c}, err
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout+runGrace)
	defer cancel()

	start := time.Now()
	var res Result
	switch c {
	case FranzGo:
		res, err = runFranz(ctx, spec)
	case Sarama:
		res, err = runSarama(ctx, spec)
	case Kcat:
		res, err = runKcat(ctx, spec)
	case ConfluentKafkaPython, KafkaJS, Java:
		res, err = runProgram(ctx, c, spec)
	default:
		err = fmt.Errorf("unknown client")
	}
	res.Client = c
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("%s: %w", c, err)
	}
	if res.Broker, err = observe(ctx, spec); err != nil {
		res.BrokerError = err.Error()
	}
	return res, nil
}

// modVersion returns the version of a Go module linked into this binary:
// from the build info, or (test binaries carry no dependency list) from the
// repository's go.mod.
func modVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	if dir, err := testclientsDir(); err == nil {
		if mod, err := os.ReadFile(filepath.Join(dir, "..", "go.mod")); err == nil {
			for _, line := range strings.Split(string(mod), "\n") {
				f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
				if len(f) >= 2 && f[0] == path {
					return f[1]
				}
			}
		}
	}
	return "unknown"
}

// since returns the milliseconds elapsed since t.
func since(t time.Time) int64 { return time.Since(t).Milliseconds() }
