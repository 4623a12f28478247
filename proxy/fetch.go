package proxy

// Fetch: v4-18 (every version kmsg knows).
//   * v7+:  fetch sessions — after a switch the client's session is unknown
//           to the new broker; the proxy ends it (see checkFetchSession).
//   * v9+:  CurrentLeaderEpoch (request, translated back).
//   * v11+: PreferredReadReplica (a node id).
//   * v12+: LastFetchedEpoch (request), DivergingEpoch, CurrentLeader (response).
//   * v13+: topic ids in both directions.
//   * v16+: NodeEndpoints (tagged broker addresses).
// Record batches carry a partitionLeaderEpoch (bytes 12-15 of a v2 batch,
// outside the CRC, which covers bytes 21 on): it is raised by the epoch
// offset in place, so the epoch a client remembers from a batch is the
// same kind of number as the one it sees in metadata.

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func rewriteFetchEpochs(r *kmsg.FetchResponse, offset int32, p *Proxy) {
	if offset == 0 {
		return
	}
	for ti := range r.Topics {
		for pi := range r.Topics[ti].Partitions {
			part := &r.Topics[ti].Partitions[pi]
			if part.DivergingEpoch.Epoch >= 0 {
				part.DivergingEpoch.Epoch += offset
			}
			patchBatchEpochs(part.RecordBatches, offset)
		}
	}
	p.raiseMaxEpoch(offset)
}

// patchBatchEpochs adds offset to the partitionLeaderEpoch of every complete
// v2 batch header in b, in place. Older message formats have no epoch.
func patchBatchEpochs(b []byte, offset int32) {
	for len(b) >= 17 {
		length := int32(binary.BigEndian.Uint32(b[8:12]))
		if length < 0 {
			return
		}
		if b[16] == 2 {
			e := int32(binary.BigEndian.Uint32(b[12:16]))
			if e >= 0 {
				binary.BigEndian.PutUint32(b[12:16], uint32(e+offset))
			}
		}
		total := 12 + int(length)
		if total > len(b) {
			return // a partial batch at the end of the response
		}
		b = b[total:]
	}
}

// checkFetchSession answers, once after a switch, an incremental fetch that
// names a session of the old cluster: with an empty response whose session
// id is 0, which makes the client drop the session and send a full fetch
// next (KIP-227) — instead of the new broker failing it with
// FETCH_SESSION_ID_NOT_FOUND.
func (c *clientConn) checkFetchSession(hdr requestHeader, r *kmsg.FetchRequest) []byte {
	if !c.staleFetchSession || hdr.Version < 7 {
		return nil
	}
	if r.SessionID > 0 && r.SessionEpoch > 0 {
		return emptyFetchResponse(hdr)
	}
	c.staleFetchSession = false
	return nil
}

// isLongPoll reports whether requests of a key may wait at the broker for
// something to happen (records to fetch, the members of a rebalance): a
// switch does not wait for them but answers them itself
// (earlyLongPollResponse).
func isLongPoll(key int16) bool {
	return key == keyFetch || key == keyJoinGroup || key == keySyncGroup
}

// earlyLongPollResponse answers a long poll the switch cut short: an empty
// fetch, or NOT_COORDINATOR for a group request (retriable: the client
// finds the coordinator again, on the new cluster).
func earlyLongPollResponse(hdr requestHeader) []byte {
	var body []byte
	switch hdr.Key {
	case keyJoinGroup:
		r := kmsg.NewPtrJoinGroupResponse()
		r.Version, r.ErrorCode, r.Generation = hdr.Version, kerr.NotCoordinator.Code, -1
		body = r.AppendTo(nil)
	case keySyncGroup:
		r := kmsg.NewPtrSyncGroupResponse()
		r.Version, r.ErrorCode = hdr.Version, kerr.NotCoordinator.Code
		body = r.AppendTo(nil)
	default:
		return emptyFetchResponse(hdr)
	}
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, body)
}

// emptyFetchResponse is a well-formed fetch response with no data that ends
// the client's fetch session.
func emptyFetchResponse(hdr requestHeader) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = hdr.Version
	return responseFrame(keyFetch, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}

// rewriteShareFetchEpochs raises the epochs of share-group fetch responses
// (KIP-932) like Fetch's: record batches and the current leader.
func rewriteShareFetchEpochs(r *kmsg.ShareFetchResponse, offset int32, p *Proxy) {
	if offset == 0 {
		return
	}
	for ti := range r.Topics {
		for pi := range r.Topics[ti].Partitions {
			patchBatchEpochs(r.Topics[ti].Partitions[pi].Records, offset)
		}
	}
	p.raiseMaxEpoch(offset)
}
