package admin

import (
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

// Conversions between the proxy core's Go types and their protobuf mirrors.
// They copy; nothing returned aliases the proxy's data. StatusToProto and
// GateFromProto are exported for the other adapter of the proxy, the
// control-plane client (proxy/controlclient), so both speak the API alike.

// statusToProto is StatusToProto under the name this package's service
// uses.
func statusToProto(st proxy.Status) *switchyardv1.ProxyStatus { return StatusToProto(st) }

// StatusToProto converts a proxy status to its API form.
func StatusToProto(st proxy.Status) *switchyardv1.ProxyStatus {
	out := &switchyardv1.ProxyStatus{
		ActiveCluster: st.ActiveCluster,
		ClusterId:     st.ClusterID,
		Switching:     st.Switching,
		Gate:          gateToProto(st.Gate),
		Connections:   st.Connections,
		InFlight:      st.InFlight,
		Held:          st.Held,
		Switches:      st.Switches,
		Brokers:       make([]*switchyardv1.VirtualBroker, 0, len(st.Brokers)),
		Clusters:      make([]*switchyardv1.ClusterStatus, 0, len(st.Clusters)),
	}
	if st.LastSwitch != nil {
		out.LastSwitch = reportToProto(*st.LastSwitch)
	}
	if len(st.InFlightByAPI) > 0 {
		out.InFlightByApi = make(map[int32]int64, len(st.InFlightByAPI))
		for k, n := range st.InFlightByAPI {
			out.InFlightByApi[int32(k)] = n
		}
	}
	for _, b := range st.Brokers {
		out.Brokers = append(out.Brokers, &switchyardv1.VirtualBroker{
			Id:         b.ID,
			Address:    b.Address,
			Upstream:   b.Upstream,
			UpstreamId: b.UpstreamID,
		})
	}
	for _, c := range st.Clusters {
		out.Clusters = append(out.Clusters, &switchyardv1.ClusterStatus{
			Name:          c.Name,
			Bootstrap:     append([]string(nil), c.Bootstrap...),
			Brokers:       int32(c.Brokers),
			RealClusterId: c.RealClusterID,
			LastError:     c.LastError,
		})
	}
	out.Usage = usageToProto(st.Usage)
	return out
}

// usageToProto converts what the proxy's clients were seen doing, in the
// proxy's order (sorted by name). Nothing seen is an absent field.
func usageToProto(u proxy.Usage) *switchyardv1.Usage {
	if u.IsZero() {
		return nil
	}
	out := &switchyardv1.Usage{
		Topics:       make([]*switchyardv1.TopicUsage, 0, len(u.Topics)),
		Groups:       make([]*switchyardv1.GroupUsage, 0, len(u.Groups)),
		Transactions: make([]*switchyardv1.TransactionalUsage, 0, len(u.Transactions)),
		Dropped:      u.Dropped,
	}
	for _, t := range u.Topics {
		out.Topics = append(out.Topics, &switchyardv1.TopicUsage{
			Topic:        t.Topic,
			Produced:     t.Produced,
			Fetched:      t.Fetched,
			Created:      t.Created,
			LastProduced: timeToProto(t.LastProduced),
			LastFetched:  timeToProto(t.LastFetched),
		})
	}
	for _, g := range u.Groups {
		out.Groups = append(out.Groups, &switchyardv1.GroupUsage{
			Group:         g.Group,
			Protocol:      g.Protocol,
			ProtocolNames: slices.Clone(g.ProtocolNames),
			MemberIds:     slices.Clone(g.MemberIDs),
			InstanceIds:   slices.Clone(g.InstanceIDs),
			ClientIds:     slices.Clone(g.ClientIDs),
			Transactional: g.Transactional,
		})
	}
	for _, t := range u.Transactions {
		out.Transactions = append(out.Transactions, &switchyardv1.TransactionalUsage{
			Id:     t.ID,
			Open:   t.Open,
			Groups: slices.Clone(t.Groups),
		})
	}
	return out
}

// gateToProto returns nil for the zero Gate, so "no gate" reads as an absent
// field (null in JSON) rather than a gate with no keys and a bogus mode.
// The gate is reported in its canonical form (proxy.Gate.Canonical), which
// an older reader without reject_api_keys still reads right whenever the
// gate refuses every key it blocks.
func gateToProto(g proxy.Gate) *switchyardv1.Gate {
	g = g.Canonical()
	if g.IsZero() {
		return nil
	}
	pg := &switchyardv1.Gate{ApiKeys: keysToProto(g.APIKeys), Mode: g.Mode.String(), RejectApiKeys: keysToProto(g.RejectKeys),
		FetchWaitsForTransactions: g.FetchWaitsForTransactions}
	if g.HoldBudget > 0 {
		pg.HoldBudget = durationpb.New(g.HoldBudget)
	}
	return pg
}

func keysToProto(keys []int16) []int32 {
	if len(keys) == 0 {
		return nil
	}
	out := make([]int32, len(keys))
	for i, k := range keys {
		out[i] = int32(k)
	}
	return out
}

// GateFromProto converts an API gate to the proxy's, in canonical form; nil
// is no gate (the zero proxy.Gate). It checks what the wire types allow but
// proxy.Gate cannot hold (keys beyond int16) and what needs no proxy state
// to judge (no keys, an unknown mode), wrapping proxy.ErrInvalidGate so such
// a gate is reported like one the proxy itself refuses. Whether each key can
// be gated is the proxy's to say, in SetGate. The mode may be empty only
// when api_keys is (a gate of reject_api_keys alone).
func GateFromProto(g *switchyardv1.Gate) (proxy.Gate, error) {
	if g == nil {
		return proxy.Gate{}, nil
	}
	var out proxy.Gate
	if len(g.GetApiKeys()) > 0 || g.GetMode() != "" {
		mode, err := proxy.ParseGateMode(g.GetMode())
		if err != nil {
			return proxy.Gate{}, err
		}
		out.Mode = mode
	}
	if len(g.GetApiKeys()) == 0 && len(g.GetRejectApiKeys()) == 0 {
		return proxy.Gate{}, fmt.Errorf("%w: no API keys", proxy.ErrInvalidGate)
	}
	var err error
	if out.APIKeys, err = keysFromProto(g.GetApiKeys()); err != nil {
		return proxy.Gate{}, err
	}
	if out.RejectKeys, err = keysFromProto(g.GetRejectApiKeys()); err != nil {
		return proxy.Gate{}, err
	}
	if b := g.GetHoldBudget(); b != nil {
		if err := b.CheckValid(); err != nil {
			return proxy.Gate{}, fmt.Errorf("%w: hold budget: %v", proxy.ErrInvalidGate, err)
		}
		out.HoldBudget = b.AsDuration()
	}
	out.FetchWaitsForTransactions = g.GetFetchWaitsForTransactions()
	return out.Canonical(), nil
}

func keysFromProto(keys []int32) ([]int16, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	out := make([]int16, 0, len(keys))
	for _, k := range keys {
		if k < 0 || k > math.MaxInt16 {
			return nil, fmt.Errorf("%w: API key %d out of range 0..%d", proxy.ErrInvalidGate, k, math.MaxInt16)
		}
		out = append(out, int16(k))
	}
	return out, nil
}

func reportToProto(r proxy.SwitchReport) *switchyardv1.SwitchReport {
	return &switchyardv1.SwitchReport{
		From:                 r.From,
		To:                   r.To,
		Started:              timeToProto(r.Started),
		Applied:              timeToProto(r.Applied),
		Duration:             durationpb.New(r.Duration()),
		Drained:              int64(r.Drained),
		FetchesAnsweredEarly: int64(r.FetchesAnsweredEarly),
		ConnectionsClosed:    int64(r.ConnectionsClosed),
	}
}

// timeToProto leaves an unset time absent instead of encoding year 1.
func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
