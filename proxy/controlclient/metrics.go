package controlclient

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Client's collectors, registered on the Registerer given
// to New (the proxy's, so one /metrics shows both). Bounded labels only.
type metrics struct {
	connected      prometheus.Gauge
	desiredVersion prometheus.Gauge
	appliedVersion prometheus.Gauge
	applyErrors    prometheus.Counter
	leases         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_sidecar_control_connected",
			Help: "1 while the watch stream to the control plane is up (a desired state has been received on it), else 0.",
		}),
		desiredVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_sidecar_desired_version",
			Help: "Version of the last desired state received from the control plane.",
		}),
		appliedVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_sidecar_applied_version",
			Help: "Version of the desired state the proxy has applied (0: none yet).",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_sidecar_apply_errors_total",
			Help: "Attempts to apply a desired state that failed or were refused.",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_sidecar_hold_leases_total",
			Help: "Hold leases received from the control plane, by outcome: honoured (held requests kept until it runs out), " +
				"ignored (for a desired state the sidecar is not in, or without a validity).",
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.desiredVersion, m.appliedVersion, m.applyErrors, m.leases} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metric: %w", err)
		}
	}
	for _, o := range []string{"honoured", "ignored"} {
		m.leases.WithLabelValues(o) // shown at 0 from the start
	}
	return m, nil
}
