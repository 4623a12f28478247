package proxy

import (
	"fmt"
	"slices"
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
//
// Keys have a mode each: those of APIKeys are treated as Mode says, those
// of RejectKeys are refused (REJECT) whatever Mode is. So one gate can hold
// Produce while it refuses Fetch — a cutover's flip does — and a request
// held by it is still held when such a gate replaces a HOLD gate. A key in
// both lists is refused. Canonical returns the one form the proxy keeps
// and reports.
type Gate struct {
	APIKeys []int16
	Mode    GateMode
	// HoldBudget, for a HOLD gate, is how long a request is parked before
	// the retriable error; 0 is Config.HoldBudget. A hold lease
	// (Proxy.ExtendHold) extends it; Config.MaxHold caps it.
	HoldBudget time.Duration
	// RejectKeys are refused whatever Mode is. With APIKeys empty, Mode
	// may be zero.
	RejectKeys []int16
	// FetchWaitsForTransactions: while a transaction is open through the
	// proxy, Fetch is not blocked, so an application whose open
	// transaction needs more input to reach its commit can finish it.
	FetchWaitsForTransactions bool
}

// Blocks reports whether the gate blocks the given API key, in any mode.
func (g Gate) Blocks(key int16) bool {
	_, ok := g.ModeFor(key)
	return ok
}

// ModeFor returns what the gate does with requests of key, and whether it
// blocks them at all.
func (g Gate) ModeFor(key int16) (GateMode, bool) {
	if slices.Contains(g.RejectKeys, key) {
		return GateReject, true
	}
	if slices.Contains(g.APIKeys, key) {
		return g.Mode, true
	}
	return 0, false
}

// IsZero reports whether the gate blocks nothing.
func (g Gate) IsZero() bool { return len(g.APIKeys) == 0 && len(g.RejectKeys) == 0 }

// Keys returns every key the gate blocks, sorted, once each.
func (g Gate) Keys() []int16 {
	keys := slices.Concat(g.APIKeys, g.RejectKeys)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Canonical returns the gate in the one form that blocks the same keys the
// same way, which the proxy keeps and reports: keys sorted and once each;
// RejectKeys only beside HOLD keys, disjoint from APIKeys; a gate whose
// every key is refused is a REJECT gate of APIKeys (the form a sidecar
// without per-key modes understands too). It allocates new slices.
func (g Gate) Canonical() Gate {
	if g.IsZero() {
		return Gate{}
	}
	reject := slices.Clone(g.RejectKeys)
	slices.Sort(reject)
	reject = slices.Compact(reject)
	var hold []int16
	if g.Mode == GateHold {
		for _, k := range g.APIKeys {
			if !slices.Contains(reject, k) {
				hold = append(hold, k)
			}
		}
		slices.Sort(hold)
		hold = slices.Compact(hold)
	}
	out := g
	if len(hold) == 0 {
		out.APIKeys, out.Mode, out.RejectKeys = g.Keys(), GateReject, nil
	} else {
		out.APIKeys, out.RejectKeys = hold, reject
		if len(reject) == 0 {
			out.RejectKeys = nil
		}
	}
	return out
}

// Equal reports whether a and b block the same keys the same way, with the
// same budget; no gate equals no gate whatever its mode.
func (g Gate) Equal(b Gate) bool {
	g, b = g.Canonical(), b.Canonical()
	return g.Mode == b.Mode && g.HoldBudget == b.HoldBudget && g.FetchWaitsForTransactions == b.FetchWaitsForTransactions &&
		slices.Equal(g.APIKeys, b.APIKeys) && slices.Equal(g.RejectKeys, b.RejectKeys)
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
	// Usage is what the clients were seen doing: the topics they produce
	// to, fetch and create, their consumer groups and transactional ids
	// (usage.go). A control plane derives a cutover's default coverage
	// from it. Its slices are shared with other snapshots: read-only.
	Usage Usage
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
