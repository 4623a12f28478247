package proxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metrics are the proxy's Prometheus collectors, registered on the
// Registerer given to New. Label sets are bounded: API keys by name,
// close reasons from a fixed list, cluster names from the config.
type metrics struct {
	connections      prometheus.Gauge
	connectionsTot   prometheus.Counter
	connClosed       *prometheus.CounterVec // reason
	requests         *prometheus.CounterVec // api_key
	requestBytes     *prometheus.CounterVec // api_key
	responseBytes    *prometheus.CounterVec // api_key
	gated            *prometheus.CounterVec // api_key, mode
	held             prometheus.Gauge
	heldBytes        prometheus.Gauge
	switches         *prometheus.CounterVec // to
	switchDuration   prometheus.Histogram
	upstreamLatency  *prometheus.HistogramVec // api_key
	earlyFetches     prometheus.Counter
	produceSplits    prometheus.Counter
	fetchRouted      prometheus.Counter
	partitionSplits  *prometheus.CounterVec
	fetchAbsorbed    prometheus.Counter
	produceResends   prometheus.Counter
	appendedRefusals *prometheus.CounterVec
	links            prometheus.Counter
	reauths          prometheus.Counter
	connRefused      prometheus.Counter
	clientAuthFails  prometheus.Counter
	authThrottled    prometheus.Counter
	staleMembers     prometheus.Counter     // deprecated alias of staleRequests' sum
	staleRequests    *prometheus.CounterVec // api, answer
	activeCluster    *prometheus.GaugeVec   // cluster
	pidRemaps        *prometheus.CounterVec // cluster
	seqChecks        *prometheus.CounterVec // outcome
	brokersRefused   prometheus.Counter
	// producerIDs and producerIDsExpired follow the producer-id table
	// (producerids.go).
	producerIDs        prometheus.Gauge
	producerIDsExpired *prometheus.CounterVec // reason

	// perKey caches each API key's per-request series (index: the key;
	// the last slot: every key kmsg does not know), so the request path
	// does not hash label values four times per request.
	perKey []atomic.Pointer[keyMetrics]
}

// keyMetrics are one API key's per-request series.
type keyMetrics struct {
	requests, requestBytes, responseBytes prometheus.Counter
	latency                               prometheus.Observer
}

// forKey returns the per-request series of an API key.
func (m *metrics) forKey(key int16) *keyMetrics {
	slot := len(m.perKey) - 1
	if shapeOf(key).known {
		slot = int(key)
	}
	if km := m.perKey[slot].Load(); km != nil {
		return km
	}
	name := apiName(key)
	km := &keyMetrics{
		requests:      m.requests.WithLabelValues(name),
		requestBytes:  m.requestBytes.WithLabelValues(name),
		responseBytes: m.responseBytes.WithLabelValues(name),
		latency:       m.upstreamLatency.WithLabelValues(name),
	}
	m.perKey[slot].CompareAndSwap(nil, km)
	return m.perKey[slot].Load()
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "switchyard", "proxy"
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connections", Help: "Open client connections."}),
		connectionsTot: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_total", Help: "Client connections accepted."}),
		connClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connection_errors_total", Help: "Client connections closed because of a fault, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "requests_total", Help: "Client requests, by API key."}, []string{"api_key"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "request_bytes_total", Help: "Client request bytes, by API key."}, []string{"api_key"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "response_bytes_total", Help: "Response bytes written to clients, by API key."}, []string{"api_key"}),
		gated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "gated_requests_total", Help: "Requests blocked by a gate, by API key and outcome (reject, hold, hold_expired, hold_limit: answered as REJECT would because MaxHeldBytes were held)."}, []string{"api_key", "outcome"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "held_requests", Help: "Requests parked now by a HOLD gate or a draining switch."}),
		heldBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "held_bytes", Help: "Bytes of the requests parked now by a HOLD gate or a draining switch."}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "switches_total", Help: "Switches applied, by target cluster."}, []string{"to"}),
		switchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "switch_duration_seconds", Help: "Time from the start of a switch to its application.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "upstream_latency_seconds", Help: "Time from forwarding a request upstream to reading its response, by API key.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"api_key"}),
		earlyFetches: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "fetches_answered_early_total", Help: "Long polls (Fetch, JoinGroup, SyncGroup) answered by the proxy during a switch instead of waited out."}),
		produceSplits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "produce_splits_total", Help: "Produce requests whose partitions different brokers lead, sent in one part per leader and answered as one (routing leader)."}),
		fetchRouted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "fetch_routed_total", Help: "Full fetches naming a partition the client's virtual broker's own broker does not lead, fetched by the proxy from the partitions' leaders and answered as one (routing leader)."}),
		partitionSplits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "partition_request_splits_total", Help: "ListOffsets, OffsetForLeaderEpoch and DeleteRecords requests whose partitions different brokers lead, sent in one part per leader and answered as one, by API (routing leader)."}, []string{"api"}),
		fetchAbsorbed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "fetch_rerouted_partitions_total", Help: "Partitions of routed fetches a broker answered as not their leader (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, ...), asked again of the new leader instead of returning the error (routing leader)."}),
		produceResends: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "produce_resent_partitions_total", Help: "Produce partitions a broker refused as not their leader (NOT_LEADER_OR_FOLLOWER), sent again by the proxy to the new leader instead of returning the error (routing leader)."}),
		appendedRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "produce_appended_refusals_total", Help: "Produce partitions without a producer id that a broker refused NOT_LEADER_OR_FOLLOWER after appending them (the leader changed while they were replicated), by what the new leader said: written (it has the batch; answered as written), resent (it does not; sent again), refused (cannot tell, or several batches: the client gets the refusal) (routing leader)."}, []string{"outcome"}),
		links: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "leader_links_total", Help: "Connections a client connection opened to a partition leader other than its virtual broker's own broker (routing leader)."}),
		connRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_refused_total", Help: "Client connections closed on accept because maxConnections were open."}),
		reauths: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "upstream_reauthentications_total", Help: "SASL sessions of upstream connections renewed in place before the broker's session lifetime ended (KIP-368)."}),
		clientAuthFails: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "client_authentication_failures_total", Help: "Client SASL authentications the proxy refused (clientAuth.mode terminate)."}),
		authThrottled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "client_authentication_throttled_total", Help: "Client SASL authentications refused without checking credentials because their address had failed clientAuth.maxFailedAuths times within clientAuth.failedAuthWindow."}),
		staleMembers: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "stale_members_total", Help: "Deprecated (removed in the next release): the sum of stale_member_requests_total."}),
		staleRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "stale_member_requests_total", Help: "Requests of consumer-group members still carrying a membership of the cluster before the last switch, answered by the proxy instead of forwarded, so that the member drops its positions and rejoins from the translated committed offsets: by API and answer (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION (a librdkafka JoinGroup), UNKNOWN_MEMBER_ID, success for a leave, NOT_LEADER_OR_FOLLOWER for a DeleteRecords while such a membership is outstanding)."}, []string{"api", "answer"}),
		activeCluster: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "active_cluster", Help: "1 for the cluster requests are routed to, 0 for the others."}, []string{"cluster"}),
		pidRemaps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "producer_id_remaps_total", Help: "Producer ids obtained on a cluster for a client producer whose id another cluster issued, by cluster."}, []string{"cluster"}),
		seqChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "producer_sequence_checks_total", Help: "First batches of idempotent producers on a partition of a cluster that did not issue their id, checked by the proxy: waited (behind the partition's first batch in flight), wait_expired (waited the hold budget without an answer to that batch, answered NOT_ENOUGH_REPLICAS), duplicate (written before, answered as written), out_of_order (answered OUT_OF_ORDER_SEQUENCE_NUMBER)."}, []string{"outcome"}),
		producerIDs: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "producer_ids", Help: "Idempotent producers the proxy follows now (one per producer id it presented), at most maxProducerIds."}),
		producerIDsExpired: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "producer_ids_expired_total", Help: "Idempotent producers the proxy forgot, by reason: idle (unused for producerIdExpiry, as brokers forget them), limit (the least recently used, to stay within maxProducerIds)."}, []string{"reason"}),
		brokersRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "virtual_brokers_refused_total", Help: "Node ids presented as -1 because their cluster named more brokers than maxVirtualBrokers."}),
	}
	m.perKey = make([]atomic.Pointer[keyMetrics], len(apiShapes())+1)
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTot, m.connClosed, m.requests,
		m.requestBytes, m.responseBytes, m.gated, m.held, m.heldBytes, m.switches, m.switchDuration,
		m.upstreamLatency, m.earlyFetches, m.produceSplits, m.fetchRouted, m.fetchAbsorbed, m.partitionSplits, m.produceResends, m.appendedRefusals, m.links, m.reauths, m.connRefused, m.clientAuthFails, m.authThrottled, m.staleMembers, m.staleRequests, m.activeCluster, m.pidRemaps, m.seqChecks,
		m.brokersRefused, m.producerIDs, m.producerIDsExpired} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// apiName is the bounded label for an API key: kmsg's name, or "Unknown"
// for keys kmsg does not know (garbage must not mint series).
func apiName(key int16) string {
	if n := kmsg.NameForKey(key); n != "" {
		return n
	}
	return "Unknown"
}
