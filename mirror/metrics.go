package mirror

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the mirror's collectors, registered on the Registerer given to
// New. Labels: mirror name, source topic, partition — bounded by the topics
// the mirror selects.
type metrics struct {
	records      *prometheus.CounterVec   // mirror, topic
	bytes        *prometheus.CounterVec   // mirror, topic
	lagRecords   *prometheus.GaugeVec     // mirror, topic, partition
	lagSeconds   *prometheus.GaugeVec     // mirror, topic, partition
	latency      *prometheus.HistogramVec // mirror
	txns         *prometheus.CounterVec   // mirror, outcome
	partErrors   *prometheus.CounterVec   // mirror, topic
	failing      *prometheus.GaugeVec     // mirror, topic, partition
	groupOffsets *prometheus.CounterVec   // mirror, outcome
	batches      *prometheus.CounterVec   // mirror, mode
	acls         *prometheus.CounterVec   // mirror, outcome
	gaps         *prometheus.CounterVec   // mirror, topic, policy
	gapOffsets   *prometheus.CounterVec   // mirror, topic
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "switchyard", "mirror"
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "records_total", Help: "Records copied to the target (committed), by source topic."}, []string{"mirror", "topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "bytes_total", Help: "Record batch bytes copied to the target (committed), as stored on the source (compressed size), by source topic."}, []string{"mirror", "topic"}),
		lagRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "lag_records", Help: "Source high watermark minus the next source offset to copy."}, []string{"mirror", "topic", "partition"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "lag_seconds", Help: "Age of the oldest source record not yet copied (0 when caught up)."}, []string{"mirror", "topic", "partition"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "replication_latency_seconds", Help: "Time from a record's timestamp to its commit on the target.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20)}, []string{"mirror"}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "transactions_total", Help: "Target transactions, by outcome (committed, aborted)."}, []string{"mirror", "outcome"}),
		partErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "partition_errors_total", Help: "Errors copying a partition (each is retried with backoff), by source topic."}, []string{"mirror", "topic"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "partition_failing", Help: "1 while a partition's last copy attempt failed."}, []string{"mirror", "topic", "partition"}),
		groupOffsets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "group_offsets_total", Help: "Consumer-group partition offsets synced to the target, by outcome (committed, unchanged, skipped, error)."}, []string{"mirror", "outcome"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "batches_total", Help: "Record batches copied to the target (committed), by mode: whole (the source's bytes) or reencoded (offset gaps, append-time timestamps)."}, []string{"mirror", "mode"}),
		acls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "acl_bindings_total", Help: "ACL bindings the ACL sync created on the target, or failed to (outcome created, error)."}, []string{"mirror", "outcome"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "gaps_total", Help: "Gaps: the source deleted records (retention, DeleteRecords) before the mirror copied them, by source topic and gap policy (continue: skipped; stop: the partition stopped)."}, []string{"mirror", "topic", "policy"}),
		gapOffsets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "gap_offsets_total", Help: "Source offsets deleted on the source before the mirror copied them and skipped under gap policy continue (records and transaction markers: the mirror never saw them), by source topic."}, []string{"mirror", "topic"}),
	}
	var err error
	for _, r := range []func() error{
		func() error { m.records, err = register(reg, m.records); return err },
		func() error { m.bytes, err = register(reg, m.bytes); return err },
		func() error { m.lagRecords, err = register(reg, m.lagRecords); return err },
		func() error { m.lagSeconds, err = register(reg, m.lagSeconds); return err },
		func() error { m.latency, err = register(reg, m.latency); return err },
		func() error { m.txns, err = register(reg, m.txns); return err },
		func() error { m.partErrors, err = register(reg, m.partErrors); return err },
		func() error { m.failing, err = register(reg, m.failing); return err },
		func() error { m.groupOffsets, err = register(reg, m.groupOffsets); return err },
		func() error { m.batches, err = register(reg, m.batches); return err },
		func() error { m.acls, err = register(reg, m.acls); return err },
		func() error { m.gaps, err = register(reg, m.gaps); return err },
		func() error { m.gapOffsets, err = register(reg, m.gapOffsets); return err },
	} {
		if err := r(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name: several mirrors in one process (a control plane) share the
// collectors, their series told apart by the mirror label.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
