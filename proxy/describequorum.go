package proxy

// DescribeQuorum: v0-2.
//   * v2: Nodes with their listeners — controller addresses. Clients cannot
//         reach controllers through the proxy, so the addresses are removed
//         rather than leaked; the voters' ids and states stay.

import "github.com/twmb/franz-go/pkg/kmsg"

func hideQuorumListeners(r *kmsg.DescribeQuorumResponse) {
	for i := range r.Nodes {
		r.Nodes[i].Listeners = nil
	}
}
