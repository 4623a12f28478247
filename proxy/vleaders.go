package proxy

// Stable virtual leaders.
//
// With routing by leader (the default), every partition request reaches
// its partition's real leader whichever virtual broker it arrives on
// (route.go, fetchroute.go, routeparts.go). So the leader a client is shown
// need not follow the real one: each partition keeps the virtual broker it
// was first presented with — the one standing for its real leader then —
// for as long as the proxy runs. A preferred-leader election, a broker's
// controlled shutdown, a reassignment or a switch to a cluster whose
// leaders differ moves the real leader; the client's metadata does not
// change, and it never hears NOT_LEADER_OR_FOLLOWER for a move. Leader
// epochs still rise as the real ones do (plus the cluster's offset), so a
// client that validates its position on a new epoch still can.
//
// What the client sees for a partition: its stable leader, in the
// replicas and in-sync replicas (added if the real ones do not name it),
// never among the offline replicas; and the broker list names every
// stable leader, with its listener's address — after a switch to a
// smaller cluster a stable leader can be a virtual broker without a broker
// of its own. A partition without a real leader (an election under way)
// is shown without one, as the cluster shows it.
//
// Errors that would send a client to its metadata for a move are kept
// from it: Produce responses carry no KIP-951 leader hints (they would
// name the real leader's virtual broker), and a fetch forwarded to the
// broker holding the client's fetch session that answers a partition
// NOT_LEADER_OR_FOLLOWER (the partition moved under the session) is
// answered FETCH_SESSION_ID_NOT_FOUND: the client starts a new session
// with a full fetch, which the proxy routes (fetchroute.go) — with the
// NOT_LEADER the client would ask for metadata naming the same leader and
// fetch from the same broker again, without end.

import (
	"context"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// vleaderTable holds each partition's stable virtual leader.
type vleaderTable struct {
	mu sync.Mutex
	m  map[topicPartition]int32
}

// vleader returns partition's stable virtual leader, making presented
// (the virtual broker of its real leader now) that leader on first sight.
func (t *vleaderTable) vleader(topic string, partition, presented int32) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := topicPartition{topic, partition}
	if v, ok := t.m[k]; ok {
		return v
	}
	if t.m == nil {
		t.m = map[topicPartition]int32{}
	}
	t.m[k] = presented
	return presented
}

// stabilizeMetadata shows each partition of a translated Metadata
// response with its stable leader.
func (p *Proxy) stabilizeMetadata(r *kmsg.MetadataResponse) {
	listed := make(map[int32]bool, len(r.Brokers))
	for _, b := range r.Brokers {
		listed[b.NodeID] = true
	}
	for ti := range r.Topics {
		t := &r.Topics[ti]
		if t.Topic == nil {
			continue
		}
		for pi := range t.Partitions {
			mp := &t.Partitions[pi]
			if mp.Leader < 0 {
				continue // no leader now: shown as the cluster shows it
			}
			v := p.vleaders.vleader(*t.Topic, mp.Partition, mp.Leader)
			if v == mp.Leader {
				continue
			}
			mp.Leader = v
			if !slices.Contains(mp.Replicas, v) {
				mp.Replicas = append([]int32{v}, mp.Replicas...)
			}
			if !slices.Contains(mp.ISR, v) {
				mp.ISR = append([]int32{v}, mp.ISR...)
			}
			mp.OfflineReplicas = slices.DeleteFunc(mp.OfflineReplicas, func(id int32) bool { return id == v })
			if !listed[v] {
				listed[v] = true
				b := kmsg.NewMetadataResponseBroker()
				b.NodeID = v
				b.Host, b.Port, _ = p.brokerAddress(v)
				r.Brokers = append(r.Brokers, b)
			}
		}
	}
}

// hideLeaderHints removes the KIP-951 leader hints of a Produce response:
// they name where the real leader is, which the client is not to follow.
func hideLeaderHints(r *kmsg.ProduceResponse) {
	for ti := range r.Topics {
		for pi := range r.Topics[ti].Partitions {
			r.Topics[ti].Partitions[pi].CurrentLeader = kmsg.NewProduceResponseTopicPartitionCurrentLeader()
		}
	}
	r.Brokers = nil
}

// sessionLostResponse answers a fetch FETCH_SESSION_ID_NOT_FOUND: the
// client drops its fetch session and sends a full fetch next (Java and
// franz-go do so without an error to the application).
func sessionLostResponse(hdr requestHeader) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = hdr.Version
	resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
	return responseFrame(keyFetch, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}

// wrongLeaders returns the topics of a decoded fetch response's partitions
// answered with an error meaning "not the leader here", once per
// partition.
func wrongLeaders(r *kmsg.FetchResponse) []wrongLeaderTopic {
	var out []wrongLeaderTopic
	for _, t := range r.Topics {
		for _, p := range t.Partitions {
			if absorbedFetchError(p.ErrorCode) {
				out = append(out, wrongLeaderTopic{name: t.Topic, id: t.TopicID})
			}
		}
	}
	return out
}

// sessionLost decides whether a fetch response from u naming partitions
// the broker does not lead (their topics: wrong) is replaced by
// FETCH_SESSION_ID_NOT_FOUND: with stable leaders, for a fetch the proxy
// forwarded whole (a routed one absorbs such errors itself) at a version
// with sessions. The proxy's leaders are refreshed first (bounded), so
// that the client's next, full fetch is routed to the partitions' leaders.
func (p *Proxy) sessionLost(ctx context.Context, u *upstream, pr *pendingReq, wrong []wrongLeaderTopic) bool {
	if !pr.stable || pr.fetch != nil || pr.hdr.Version < 7 {
		return false
	}
	topics := make([]string, 0, len(wrong))
	for _, w := range wrong {
		name := w.name
		if w.id != ([16]byte{}) {
			if n, ok := u.topicName(w.id); ok {
				name = n
			}
		}
		if name != "" && !slices.Contains(topics, name) {
			topics = append(topics, name)
		}
	}
	p.m.fetchAbsorbed.Add(float64(len(wrong)))
	rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	if err := u.refreshLeaders(rctx, topics, pr.sent); err != nil {
		p.log.Debug("fetch answered NOT_LEADER_OR_FOLLOWER: refresh leaders", zap.Error(err))
	}
	return true
}
