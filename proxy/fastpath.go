package proxy

// Fast paths for the two APIs that carry the data: Produce requests and
// Fetch responses. Instead of decoding the frame into kmsg structs and
// encoding it again — which copies every record byte and, measured, cost
// most of the proxy's CPU — the frame is walked once, the positions of the
// fixed-size fields that need translating are collected (topic ids, node
// ids, leader epochs, record batch headers), and they are patched in place.
// Record data is neither copied nor touched. Anything the walk does not
// expect (a field whose size would change, like broker addresses in Fetch's
// NodeEndpoints, or a version without a walker) falls back to the full
// decode and re-encode, which handles everything.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/switchyard/switchyard/wirecheck"
)

var errNoFastPath = errors.New("no fast path")

// walkedProduce is a Produce request body as walkProduce found it: its
// fields, and where its parts are, so that it can be split by partition
// (route.go) without decoding.
type walkedProduce struct {
	txnID   *string
	acks    int16
	timeout int32 // the request's TimeoutMillis
	topics  []produceTopic
	// topicsAt is the offset of the topic array's length, after the
	// transactional id, acks and timeout; topicsEnd the offset after the
	// last topic (the request's tags follow, in flexible versions).
	topicsAt, topicsEnd int
}

// produceTopic is one topic of a walked Produce request.
type produceTopic struct {
	name  string
	idOff int // offset of the 16-byte topic id in the body (v13+), else -1
	parts []producePart
	// key: the offsets of the topic's name or id; tagsAt: of its tags,
	// after its partitions; end: after them.
	key         [2]int
	tagsAt, end int
}

type producePart struct {
	partition int32
	records   []byte // aliases the frame
	span      [2]int // the partition's entry in the body
}

// walkProduce parses a Produce request body (v3+) without copying. Records
// alias body.
func walkProduce(body []byte, version int16) (walkedProduce, error) {
	var w walkedProduce
	if version < 3 {
		return w, errNoFastPath
	}
	flexible := version >= 9
	b := kbin.Reader{Src: body}
	pos := func() int { return len(body) - len(b.Src) }
	if flexible {
		w.txnID = b.CompactNullableString()
	} else {
		w.txnID = b.NullableString()
	}
	w.acks = b.Int16()
	w.timeout = b.Int32()
	w.topicsAt = pos()
	n := arrayLen(&b, flexible)
	if n < 0 || n > len(b.Src) {
		return w, errors.New("produce: bad topic count")
	}
	// Grown as topics are read, not sized by the count the client sent.
	w.topics = make([]produceTopic, 0, min(n, 16))
	for i := 0; i < n && b.Ok(); i++ {
		t := produceTopic{idOff: -1}
		t.key[0] = pos()
		if version >= 13 {
			t.idOff = pos()
			b.Span(16)
		} else if flexible {
			t.name = b.UnsafeCompactString()
		} else {
			t.name = b.UnsafeString()
		}
		t.key[1] = pos()
		np := arrayLen(&b, flexible)
		if np < 0 || np > len(b.Src) {
			return w, errors.New("produce: bad partition count")
		}
		for j := 0; j < np && b.Ok(); j++ {
			p := producePart{span: [2]int{pos(), 0}}
			p.partition = b.Int32()
			if flexible {
				p.records = b.CompactNullableBytes()
				skipTags(&b)
			} else {
				p.records = b.NullableBytes()
			}
			p.span[1] = pos()
			t.parts = append(t.parts, p)
		}
		t.tagsAt = pos()
		if flexible {
			skipTags(&b)
		}
		t.end = pos()
		w.topics = append(w.topics, t)
	}
	w.topicsEnd = pos()
	if flexible {
		skipTags(&b)
	}
	if !b.Ok() {
		return w, errors.New("produce: request overruns the frame")
	}
	return w, nil
}

// refusedPart is a partition a Produce response refused for a reason that
// means "not written, ask its leader" (resendable).
type refusedPart struct {
	key  partKey
	code int16
	// appended: the broker had appended the records before it refused
	// them. Kafka answers an acks=all Produce whose leader lost its
	// leadership while the records were being replicated with
	// NOT_LEADER_OR_FOLLOWER and the offsets of the append; refused before
	// appending, the base offset (and, v5+, the log start offset) is -1.
	// Whether such records survive the leader change is unknown.
	appended bool
	// baseOffset: where it was appended (appended only).
	baseOffset int64
}

// resendable reports whether a Produce partition error means the broker
// did not append the records because it does not lead the partition (now):
// sent to the leader, they would be.
func resendable(code int16) bool {
	switch code {
	case kerr.NotLeaderForPartition.Code, kerr.LeaderNotAvailable.Code:
		return true
	}
	return false
}

// walkProduceRefusals walks a Produce response body (after the response
// header) without decoding it and appends to dst the partitions it refused
// with a resendable code. Topic names in the keys alias body.
func walkProduceRefusals(body []byte, version int16, dst []refusedPart) ([]refusedPart, error) {
	flexible := version >= 9
	b := kbin.Reader{Src: body}
	n := max(arrayLen(&b, flexible), 0) // a null array is empty
	if n > len(b.Src) {
		return dst, errors.New("produce response: bad topic count")
	}
	for i := 0; i < n && b.Ok(); i++ {
		var k partKey
		switch {
		case version >= 13:
			copy(k.id[:], b.Span(16))
		case flexible:
			k.topic = b.UnsafeCompactString()
		default:
			k.topic = b.UnsafeString()
		}
		np := max(arrayLen(&b, flexible), 0)
		if np > len(b.Src) {
			return dst, errors.New("produce response: bad partition count")
		}
		for j := 0; j < np && b.Ok(); j++ {
			k.partition = b.Int32()
			code := b.Int16()
			baseOffset := b.Int64()
			appended := baseOffset >= 0
			if version >= 2 {
				b.Int64() // log append time
			}
			if version >= 5 {
				logStart := b.Int64()
				appended = appended && logStart >= 0
			}
			if version >= 8 {
				ne := max(arrayLen(&b, flexible), 0)
				if ne > len(b.Src) {
					return dst, errors.New("produce response: bad record error count")
				}
				for e := 0; e < ne && b.Ok(); e++ {
					b.Int32()
					if flexible {
						b.CompactNullableString()
						skipTags(&b)
					} else {
						b.NullableString()
					}
				}
				if flexible {
					b.CompactNullableString()
				} else {
					b.NullableString()
				}
			}
			if flexible {
				skipTags(&b)
			}
			if b.Ok() && resendable(code) {
				rp := refusedPart{key: k, code: code, appended: appended}
				if appended {
					rp.baseOffset = baseOffset
				}
				dst = append(dst, rp)
			}
		}
		if flexible {
			skipTags(&b)
		}
	}
	if !b.Ok() {
		return dst, errors.New("produce response: overruns the frame")
	}
	return dst, nil
}

func arrayLen(b *kbin.Reader, flexible bool) int {
	if flexible {
		return int(b.Uvarint()) - 1
	}
	return int(b.Int32())
}

// fetchPatches are the positions in a Fetch response body to translate.
type fetchPatches struct {
	topicIDs       []int    // 16-byte topic ids
	nodeIDs        []int    // int32 node ids (preferred read replica, current leader)
	epochs         []int    // int32 leader epochs (diverging epoch, current leader)
	batches        [][]byte // record batches (partitionLeaderEpoch patched)
	hasNodeEndpont bool     // top-level NodeEndpoints: addresses, not patchable in place
	// wrong: the topics of partitions answered with an error meaning
	// "not the leader here" (absorbedFetchError), by name (v12) or real
	// id (v13+), once per partition.
	wrong []wrongLeaderTopic
	// parts: every partition's entry, when asked for (routed fetches),
	// and the response's top-level throttle and error code.
	parts    []fetchEntry
	throttle int32
	errCode  int16
}

// fetchEntry is one partition's entry in a Fetch response body: where it
// lies, and what a routed fetch needs of it.
type fetchEntry struct {
	topic       wrongLeaderTopic // the topic's name (v12, aliasing the body) or id (v13+), as the broker sent it
	partition   int32
	code        int16
	hw, lso     int64
	logStart    int64
	records     int    // record bytes
	span        [2]int // the entry, from its partition number through its tags
	preferredAt int    // its preferred read replica (int32)
}

// wrongLeaderTopic names the topic of a fetched partition a broker does
// not lead: by name, or (v13+) by id.
type wrongLeaderTopic struct {
	name string
	id   [16]byte
}

// walkFetchEntries collects the patch positions of a flexible (v12+)
// Fetch response body, and lists every partition's entry when entries is
// set.
func walkFetchEntries(body []byte, version int16, entries bool) (*fetchPatches, error) {
	if version < 12 {
		return nil, errNoFastPath
	}
	var fp fetchPatches
	b := kbin.Reader{Src: body}
	pos := func() int { return len(body) - len(b.Src) }
	fp.throttle = b.Int32()
	fp.errCode = b.Int16()
	b.Int32() // session id
	nt := int(b.Uvarint()) - 1
	if nt < -1 || nt > len(b.Src) {
		return nil, errors.New("fetch: bad topic count")
	}
	for i := 0; i < nt && b.Ok(); i++ {
		var topic wrongLeaderTopic
		if version >= 13 {
			fp.topicIDs = append(fp.topicIDs, pos())
			copy(topic.id[:], b.Span(16))
		} else {
			topic.name = b.UnsafeCompactString() // cloned if kept
		}
		np := int(b.Uvarint()) - 1
		if np < -1 || np > len(b.Src) {
			return nil, errors.New("fetch: bad partition count")
		}
		for j := 0; j < np && b.Ok(); j++ {
			e := fetchEntry{topic: topic}
			e.span[0] = pos()
			e.partition = b.Int32()
			if e.code = b.Int16(); absorbedFetchError(e.code) {
				fp.wrong = append(fp.wrong, wrongLeaderTopic{name: strings.Clone(topic.name), id: topic.id})
			}
			e.hw = b.Int64()
			e.lso = b.Int64()
			e.logStart = b.Int64()
			na := int(b.Uvarint()) - 1
			if na < -1 || na > len(b.Src) {
				return nil, errors.New("fetch: bad aborted transaction count")
			}
			for k := 0; k < na && b.Ok(); k++ {
				b.Int64() // producer id
				b.Int64() // first offset
				skipTags(&b)
			}
			e.preferredAt = pos()
			fp.nodeIDs = append(fp.nodeIDs, pos())
			b.Int32() // preferred read replica
			if recs := b.CompactNullableBytes(); len(recs) > 0 {
				fp.batches = append(fp.batches, recs)
				e.records = len(recs)
			}
			ntags := b.Uvarint()
			for k := uint32(0); k < ntags && b.Ok(); k++ {
				tag := b.Uvarint()
				size := int(b.Uvarint())
				start := pos()
				if b.Span(size); !b.Ok() {
					break // overruns the frame: refused below
				}
				// The positions are patched in place, so they must lie
				// inside the tag: a broker (or anyone in the middle of a
				// plaintext connection) decides the size.
				switch {
				case tag == 0 && size >= 12: // DivergingEpoch: epoch int32, end offset int64
					fp.epochs = append(fp.epochs, start)
				case tag == 1 && size >= 8: // CurrentLeader: leader id int32, leader epoch int32
					fp.nodeIDs = append(fp.nodeIDs, start)
					fp.epochs = append(fp.epochs, start+4)
				case tag <= 1:
					return nil, fmt.Errorf("fetch: tagged field %d of %d bytes is too short", tag, size)
				}
			}
			if entries {
				e.span[1] = pos()
				fp.parts = append(fp.parts, e)
			}
		}
		skipTags(&b)
	}
	ntags := b.Uvarint()
	for k := uint32(0); k < ntags && b.Ok(); k++ {
		tag := b.Uvarint()
		size := int(b.Uvarint())
		if tag == 0 {
			fp.hasNodeEndpont = true
		}
		b.Span(size)
	}
	if !b.Ok() || len(b.Src) != 0 {
		return nil, errors.New("fetch: response does not parse")
	}
	return &fp, nil
}

// patchFetchResponse translates a Fetch response body in place. It returns
// errNoFastPath when the response needs the full rewrite.
//
// The body is first walked by wirecheck, as every response the proxy
// decodes is: the fast walk looks only at what it patches, and a
// malformed response it patched would reach the client changed and still
// malformed (a DivergingEpoch tag of 12 bytes, which lacks its own tag
// count, was one: FuzzRewriteResponse). Refused here, the response goes to
// the full path, whose walk refuses it too and closes the connection.
func patchFetchResponse(body []byte, version int16, tr *respTranslator) (*fetchPatches, error) {
	return patchFetchEntries(body, version, tr, false)
}

// patchFetchEntries is patchFetchResponse, also listing every partition's
// entry (walkFetchEntries) when entries is set.
func patchFetchEntries(body []byte, version int16, tr *respTranslator, entries bool) (*fetchPatches, error) {
	if err := wirecheck.Response(keyFetch, version, body); err != nil {
		return nil, err
	}
	fp, err := walkFetchEntries(body, version, entries)
	if err != nil {
		return nil, err
	}
	if fp.hasNodeEndpont {
		return nil, errNoFastPath
	}
	for _, off := range fp.topicIDs {
		var id [16]byte
		copy(id[:], body[off:off+16])
		if id != ([16]byte{}) {
			v := tr.topicID(id)
			copy(body[off:off+16], v[:])
		}
	}
	for _, off := range fp.nodeIDs {
		id := int32(binary.BigEndian.Uint32(body[off:]))
		binary.BigEndian.PutUint32(body[off:], uint32(tr.nodeID(id)))
	}
	for _, off := range fp.epochs {
		e := int32(binary.BigEndian.Uint32(body[off:]))
		binary.BigEndian.PutUint32(body[off:], uint32(tr.epoch(e)))
	}
	if tr.offset != 0 {
		for _, recs := range fp.batches {
			patchBatchEpochs(recs, tr.offset)
		}
		tr.p.raiseMaxEpoch(tr.offset)
	}
	return fp, nil
}
