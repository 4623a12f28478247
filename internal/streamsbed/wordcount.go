package streamsbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The topics of WordCountDemo, fixed in its code.
const (
	InputTopic  = "streams-plaintext-input"
	OutputTopic = "streams-wordcount-output"
)

// Processing guarantees (processing.guarantee).
const (
	ExactlyOnceV2 = "exactly_once_v2"
	AtLeastOnce   = "at_least_once"
)

// storeName is the name Streams generates for WordCountDemo's count()
// store: its internal topics are "<application.id>-<storeName>-repartition"
// and "-changelog".
const storeName = "KSTREAM-AGGREGATE-STATE-STORE-0000000003"

// RepartitionTopic is the topic WordCountDemo's groupBy writes and its
// count reads (Streams deletes what it consumed from it).
func RepartitionTopic(appID string) string { return appID + "-" + storeName + "-repartition" }

// ChangelogTopic is the compacted topic backing the count store.
func ChangelogTopic(appID string) string { return appID + "-" + storeName + "-changelog" }

// WordCountSpec describes one WordCountDemo instance.
type WordCountSpec struct {
	Lib Lib
	// Bootstrap is the address it connects to (a sidecar).
	Bootstrap string
	// AppID is application.id, also its consumer group.
	AppID string
	// Guarantee is processing.guarantee: ExactlyOnceV2 or AtLeastOnce.
	Guarantee string
	// Threads is num.stream.threads; 0 means 1.
	Threads int
	// Standbys is num.standby.replicas.
	Standbys int
	// Dir receives its configuration, log and state (Dir/state, kept
	// across a Kill and a start with the same Dir); Name names its files
	// and the process.
	Dir, Name string
	// Extra are more Streams properties.
	Extra map[string]string
}

// WordCount is a running WordCountDemo.
type WordCount struct {
	spec WordCountSpec
	j    *jvm
	scan *logScan
}

// StartWordCount starts Apache Kafka's WordCountDemo with a properties file
// made of spec (its only argument; the demo fills in the rest: String
// serdes, statestore.cache.max.bytes=0 so that every count is written,
// auto.offset.reset=earliest).
func StartWordCount(spec WordCountSpec) (*WordCount, error) {
	if spec.Guarantee != ExactlyOnceV2 && spec.Guarantee != AtLeastOnce {
		return nil, fmt.Errorf("wordcount %s: guarantee %q: want %s or %s", spec.Name, spec.Guarantee, ExactlyOnceV2, AtLeastOnce)
	}
	if spec.Bootstrap == "" || spec.AppID == "" || spec.Dir == "" || spec.Name == "" {
		return nil, fmt.Errorf("wordcount spec %+v: want a bootstrap, an application id, a dir and a name", spec)
	}
	if spec.Threads == 0 {
		spec.Threads = 1
	}
	props := map[string]string{
		"application.id":       spec.AppID,
		"bootstrap.servers":    spec.Bootstrap,
		"processing.guarantee": spec.Guarantee,
		"state.dir":            filepath.Join(spec.Dir, "state"),
		"num.stream.threads":   strconv.Itoa(spec.Threads),
		"num.standby.replicas": strconv.Itoa(spec.Standbys),
	}
	for k, v := range spec.Extra {
		props[k] = v
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	file := filepath.Join(spec.Dir, spec.Name+".properties")
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("wordcount %s: %w", spec.Name, err)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("wordcount %s: write its properties: %w", spec.Name, err)
	}
	j, err := startJVM(spec.Lib, spec.Dir, spec.Name, nil, "org.apache.kafka.streams.examples.wordcount.WordCountDemo", file)
	if err != nil {
		return nil, err
	}
	return &WordCount{spec: spec, j: j, scan: &logScan{path: j.Log}}, nil
}

// Spec returns what it was started with.
func (w *WordCount) Spec() WordCountSpec { return w.spec }

// Log scans what its log gained since the last call and returns the
// summary of all of it so far.
func (w *WordCount) Log() (LogSummary, error) { return w.scan.update() }

// Exited reports whether the JVM exited, and how.
func (w *WordCount) Exited() (bool, error) { return w.j.exited() }

// Stop closes Streams cleanly (SIGTERM: the demo's shutdown hook calls
// KafkaStreams.close) and waits for the exit, killing it at ctx's end.
func (w *WordCount) Stop(ctx context.Context) error { return w.j.stop(ctx) }

// Kill ends it with SIGKILL: a crash, its state directory left as it was.
func (w *WordCount) Kill() { w.j.kill() }

// Files names its log and standard error files.
func (w *WordCount) Files() (log, stderr string) { return w.j.Log, w.j.Stderr }
