package proxy

// Routing ListOffsets, OffsetForLeaderEpoch and DeleteRecords by partition
// leader.
//
// Like a Produce (route.go), each of these names partitions that only
// their leader answers for; sent to the virtual broker's own broker after
// a switch to a cluster whose leaders differ, or after a leader move, the
// partitions it does not lead are refused NOT_LEADER_OR_FOLLOWER — and a
// consumer pays a metadata refresh and another round trip before it can
// reset or validate its position. The proxy sends each partition to its
// leader: whole to the one broker that leads them all, else one request
// per leader on the connection's links, answers merged back into the
// request's order (these requests are small: decoded and encoded, not
// spliced). A partition refused anyway (the leader moved since the proxy
// last looked) is the client's to retry, as before.

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// routedPartitionKey reports whether requests of key are routed by
// routePartitions.
func routedPartitionKey(key int16) bool {
	return key == keyListOffsets || key == keyOffsetForLeaderEpoch || key == keyDeleteRecords
}

// routePartitions decides where a ListOffsets, OffsetForLeaderEpoch or
// DeleteRecords request (frame, translated for adm's cluster) goes: whole
// to the one connection whose broker leads every partition (split nil),
// else one part per leader's connection, parts[i] for split.subs[i], with
// the merge the writer applies to their answers.
func (c *clientConn) routePartitions(ctx context.Context, adm admission, up *upConn, hdr requestHeader, frame []byte) (*upConn, []net.Buffers, *requestSplit) {
	req := kmsg.RequestForKey(hdr.Key)
	if req == nil || decodeRequest(req, hdr, frame[hdr.BodyOffset:]) != nil {
		return up, nil, nil // the broker answers what the proxy cannot read
	}
	u := adm.u
	var (
		subs  []*upConn
		links = map[int32]*upConn{}
	)
	// linkFor is the connection of a partition's leader (up when the
	// leader is unknown or cannot be reached: it answers as before).
	linkFor := func(topic string, partition int32) int {
		node := up.node
		if l, ok := u.leader(topic, partition); ok {
			node = l
		}
		l, ok := links[node]
		if !ok {
			l = c.link(ctx, adm, up, node)
			links[node] = l
		}
		if i := slices.Index(subs, l); i >= 0 {
			return i
		}
		subs = append(subs, l)
		return len(subs) - 1
	}
	parts := splitPartitionRequest(req, linkFor)
	if parts == nil {
		return up, nil, nil
	}
	switch len(subs) {
	case 0:
		return up, nil, nil
	case 1:
		return subs[0], nil, nil // the frame as it is
	}
	c.p.m.partitionSplits.WithLabelValues(apiName(hdr.Key)).Inc()
	out := make([]net.Buffers, len(parts))
	for i, p := range parts {
		out[i] = net.Buffers{requestFrame(hdr, p.AppendTo(nil))}
	}
	merge := func(frames [][]byte) ([]byte, error) { return mergePartitionResponses(req, hdr, frames) }
	return subs[0], out, &requestSplit{subs: subs, merge: merge}
}

// The three requests (and their responses) have one shape: Topics, each
// with its Topic name and Partitions, each with its Partition number. They
// are split and merged by that shape, through reflection: these requests
// are rare (a consumer's position resets and validations), and a field a
// new version adds is carried along without code changes.

// splitPartitionRequest cuts req into one request per connection index
// linkFor gives its partitions (in first-use order), keeping the order of
// topics and partitions and every other field; nil if req is not of the
// shape.
func splitPartitionRequest(req kmsg.Request, linkFor func(topic string, partition int32) int) []kmsg.Request {
	rv := reflect.ValueOf(req).Elem()
	topics := rv.FieldByName("Topics")
	if !topics.IsValid() || topics.Kind() != reflect.Slice {
		return nil
	}
	var subs []reflect.Value // each a Topics slice
	for ti := range topics.Len() {
		t := topics.Index(ti)
		name, parts := t.FieldByName("Topic"), t.FieldByName("Partitions")
		if name.Kind() != reflect.String || parts.Kind() != reflect.Slice {
			return nil
		}
		kept := map[int]reflect.Value{} // sub → this topic's partitions there
		var order []int
		for pi := range parts.Len() {
			p := parts.Index(pi)
			s := linkFor(name.String(), int32(p.FieldByName("Partition").Int()))
			if _, ok := kept[s]; !ok {
				kept[s] = reflect.MakeSlice(parts.Type(), 0, parts.Len())
				order = append(order, s)
			}
			kept[s] = reflect.Append(kept[s], p)
		}
		for _, s := range order {
			for len(subs) <= s {
				subs = append(subs, reflect.MakeSlice(topics.Type(), 0, topics.Len()))
			}
			cut := reflect.New(t.Type()).Elem()
			cut.Set(t)
			cut.FieldByName("Partitions").Set(kept[s])
			subs[s] = reflect.Append(subs[s], cut)
		}
	}
	out := make([]kmsg.Request, len(subs))
	for i, ts := range subs {
		sub := reflect.New(rv.Type())
		sub.Elem().Set(rv)
		sub.Elem().FieldByName("Topics").Set(ts)
		out[i] = sub.Interface().(kmsg.Request)
	}
	return out
}

// mergePartitionResponses merges the answers to the parts of req (each
// frame from its correlation id on) into one response frame: every
// partition answered, in the request's order; throttle the longest.
func mergePartitionResponses(req kmsg.Request, hdr requestHeader, frames [][]byte) ([]byte, error) {
	got := map[topicPartition]reflect.Value{}
	var throttle int64
	for i, f := range frames {
		resp := req.ResponseKind()
		if err := decodePart(resp, hdr, i, f); err != nil {
			return nil, err
		}
		rv := reflect.ValueOf(resp).Elem()
		throttle = max(throttle, rv.FieldByName("ThrottleMillis").Int())
		topics := rv.FieldByName("Topics")
		for ti := range topics.Len() {
			t := topics.Index(ti)
			parts := t.FieldByName("Partitions")
			for pi := range parts.Len() {
				p := parts.Index(pi)
				got[topicPartition{t.FieldByName("Topic").String(), int32(p.FieldByName("Partition").Int())}] = p
			}
		}
	}
	merged := req.ResponseKind()
	merged.SetVersion(hdr.Version)
	mv := reflect.ValueOf(merged).Elem()
	mv.FieldByName("ThrottleMillis").SetInt(throttle)
	mtopics := mv.FieldByName("Topics")
	rtopics := reflect.ValueOf(req).Elem().FieldByName("Topics")
	for ti := range rtopics.Len() {
		rt := rtopics.Index(ti)
		name := rt.FieldByName("Topic").String()
		mt := reflect.New(mtopics.Type().Elem()).Elem()
		mt.FieldByName("Topic").SetString(name)
		mparts := mt.FieldByName("Partitions")
		rparts := rt.FieldByName("Partitions")
		for pi := range rparts.Len() {
			if p, ok := got[topicPartition{name, int32(rparts.Index(pi).FieldByName("Partition").Int())}]; ok {
				mparts = reflect.Append(mparts, p)
			}
		}
		mt.FieldByName("Partitions").Set(mparts)
		mtopics = reflect.Append(mtopics, mt)
	}
	mv.FieldByName("Topics").Set(mtopics)
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, merged.AppendTo(nil)), nil
}

// decodePart decodes the answer (from its correlation id on) to part i of
// a split request into resp.
func decodePart(resp kmsg.Response, hdr requestHeader, i int, frame []byte) error {
	hl, err := responseHeaderLen(hdr.Key, hdr.Version, frame)
	if err != nil {
		return fmt.Errorf("part %d of a split %s: %w", i+1, apiName(hdr.Key), err)
	}
	resp.SetVersion(hdr.Version)
	if err := decodeResponse(resp, hdr.Key, hdr.Version, frame[hl:]); err != nil {
		return fmt.Errorf("part %d of a split %s: %w", i+1, apiName(hdr.Key), err)
	}
	return nil
}
