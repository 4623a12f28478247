package proxy

import (
	"fmt"
	"strings"
	"time"
)

// GateMode says what a gate does with the requests it blocks.
type GateMode int

const (
	// GateReject answers blocked requests at once with a well-formed response
	// carrying a retriable error for that API, so clients back off and retry.
	GateReject GateMode = iota + 1
	// GateHold parks blocked requests and forwards them, in arrival order,
	// when the gate lifts; a request held longer than the hold budget is
	// answered with a retriable error instead.
	GateHold
)

func (m GateMode) String() string {
	switch m {
	case GateReject:
		return "REJECT"
	case GateHold:
		return "HOLD"
	default:
		return fmt.Sprintf("GateMode(%d)", int(m))
	}
}

// ParseGateMode parses "REJECT" or "HOLD" (case-insensitive).
func ParseGateMode(s string) (GateMode, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "REJECT":
		return GateReject, nil
	case "HOLD":
		return GateHold, nil
	default:
		return 0, fmt.Errorf("%w: mode %q: want REJECT or HOLD", ErrInvalidGate, s)
	}
}

// Gate blocks a set of API keys. The zero Gate blocks nothing.
type Gate struct {
	APIKeys []int16
	Mode    GateMode
	// HoldBudget, for a HOLD gate, is how long a request is parked before
	// the retriable error; 0 is Config.HoldBudget.
	HoldBudget time.Duration
}

// Blocks reports whether the gate blocks the given API key.
func (g Gate) Blocks(key int16) bool {
	for _, k := range g.APIKeys {
		if k == key {
			return true
		}
	}
	return false
}

// Status is a point-in-time view of a proxy.
type Status struct {
	// ActiveCluster is the cluster new requests go to.
	ActiveCluster string
	// ClusterID is the virtual cluster id every client sees.
	ClusterID string
	// Switching is true while a switch drains.
	Switching bool
	// Gate is the gate in force (zero when none).
	Gate Gate
	// Connections counts open client connections.
	Connections int64
	// InFlight counts requests forwarded upstream and not yet answered.
	InFlight int64
	// InFlightByAPI counts in-flight requests per API key (non-zero only).
	// A transaction open through the proxy counts as one Produce (0) and
	// one EndTxn (26): its records and its end are still to come (txn.go).
	// A control plane that gated Produce waits for InFlightByAPI[0] to reach
	// zero before it trusts the source's high watermarks; with the gate in
	// force no transaction starts, so zero also means none is open.
	InFlightByAPI map[int16]int64
	// Held counts requests parked by a HOLD gate or a draining switch.
	Held int64
	// Switches counts switches applied since start.
	Switches uint64
	// LastSwitch describes the most recent switch, nil before the first.
	LastSwitch *SwitchReport
	// Brokers lists the virtual brokers and where they point now.
	Brokers []VirtualBroker
	// Clusters lists the configured clusters.
	Clusters []ClusterStatus
}

// VirtualBroker is one broker of the virtual cluster.
type VirtualBroker struct {
	// ID is the virtual node id clients see.
	ID int32
	// Address is the local listener clients dial.
	Address string
	// Upstream is the real broker of the active cluster it leads to ("" if
	// the active cluster has no broker for it).
	Upstream string
	// UpstreamID is that broker's real node id (-1 if none).
	UpstreamID int32
}

// ClusterStatus describes one configured upstream cluster.
type ClusterStatus struct {
	Name      string
	Bootstrap []string
	// Brokers is the number of brokers last seen in its metadata.
	Brokers int
	// RealClusterID is the id the cluster reports for itself.
	RealClusterID string
	// LastError is the last error talking to it ("" if none).
	LastError string
}

// SwitchReport describes an applied switch.
type SwitchReport struct {
	From, To string
	Started  time.Time
	Applied  time.Time
	// Drained counts requests that were in flight when the switch began and
	// were answered by the old cluster before the flip.
	Drained int
	// FetchesAnsweredEarly counts long-poll fetches the proxy answered itself
	// (empty) instead of waiting them out.
	FetchesAnsweredEarly int
	// ConnectionsClosed counts client connections that could not be carried
	// over (still in flight at the drain deadline) and were closed.
	ConnectionsClosed int
}

// Duration is the time from the start of the switch to its application.
func (r SwitchReport) Duration() time.Duration { return r.Applied.Sub(r.Started) }
