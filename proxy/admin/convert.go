package admin

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

// Conversions from the proxy core's Go types to their protobuf mirrors. They
// copy; nothing returned aliases the proxy's data.

func statusToProto(st proxy.Status) *switchyardv1.ProxyStatus {
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
	return out
}

// gateToProto returns nil for the zero Gate, so "no gate" reads as an absent
// field (null in JSON) rather than a gate with no keys and a bogus mode.
func gateToProto(g proxy.Gate) *switchyardv1.Gate {
	if len(g.APIKeys) == 0 {
		return nil
	}
	keys := make([]int32, len(g.APIKeys))
	for i, k := range g.APIKeys {
		keys[i] = int32(k)
	}
	return &switchyardv1.Gate{ApiKeys: keys, Mode: g.Mode.String()}
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
