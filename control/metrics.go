package control

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the control plane's collectors.
type metrics struct {
	sidecars    *prometheus.GaugeVec     // app, state (connected, unacknowledged, diverged, disconnected)
	cutovers    *prometheus.CounterVec   // outcome (done, rolled_back, failed)
	active      *prometheus.GaugeVec     // step: cutovers in progress per step
	blockWindow prometheus.Histogram     // producer block window of finished cutovers
	stepSeconds *prometheus.HistogramVec // step
	// Two-phase cutovers: the groups' block window (quiesce to release)
	// and how their drains ended (end, timeout, skipped).
	groupBlockWindow prometheus.Histogram
	groupDrains      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "switchyard", "control"
	m := &metrics{
		sidecars: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sidecars",
			Help: "Sidecars known to the control plane, by application and state: connected (and acknowledged their desired state), unacknowledged (connected, behind or failing to apply), diverged (connected, running a desired-state version this control plane did not issue it, e.g. after its store was lost: declare the application's state), disconnected."},
			[]string{"app", "state"}),
		cutovers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cutovers_total",
			Help: "Cutovers ended, by outcome: done, rolled_back, failed."}, []string{"outcome"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "cutovers_in_progress",
			Help: "Cutovers in progress, by step."}, []string{"step"}),
		blockWindow: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "block_window_seconds",
			Help:    "Time producers were gated (gate to release) in cutovers that released.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60}}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "step_duration_seconds",
			Help: "Time spent in each cutover step.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"step"}),
	}
	m.groupBlockWindow = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "group_block_window_seconds",
		Help:    "Two-phase cutovers: time the applications with consumer groups had their commits, new transactions and (from their flip) fetches held, quiesce to release.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60}})
	m.groupDrains = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "group_drains_total",
		Help: "Two-phase cutovers: how the groups' drain ended: end (they committed the source's end), timeout (quiesced where they were), skipped (policy.group_drain_timeout 0)."},
		[]string{"outcome"})
	for _, c := range []prometheus.Collector{m.sidecars, m.cutovers, m.active, m.blockWindow, m.stepSeconds, m.groupBlockWindow, m.groupDrains} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
