package proxy

// Fuzz targets for the proxy's decoders: bad bytes from a client or a
// broker must close one connection (an error), never panic.
//
// Each target is seeded with valid kmsg encodings (f.Add) and with the
// committed corpus under testdata/fuzz/<FuzzName>/. Run one with, e.g.:
//
//	go test -run '^$' -fuzz '^FuzzRewriteResponse$' -fuzztime 30s ./proxy/
//
// Regenerate the committed corpus after kmsg learns new versions with:
//
//	SWITCHYARD_WRITE_FUZZ_CORPUS=1 go test -run '^TestWriteFuzzCorpus$' ./proxy/

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/wirecheck"
)

// fuzzRewriteKeys are the APIs whose rewriting is fuzzed.
var fuzzRewriteKeys = []int16{
	keyMetadata, keyFindCoordinator, keyDescribeCluster, keyProduce, keyFetch,
	keyApiVersions, keyOffsetCommit, keyOffsetFetch, keyListOffsets,
	keyOffsetForLeaderEpoch, keyInitProducerID, keyConsumerGroupHeartbeat,
	keyDescribeQuorum,
}

// fuzzGateKeys are the gateable APIs, ascending.
func fuzzGateKeys() []int16 {
	var keys []int16
	for k := int16(0); k <= maxKmsgKey(); k++ {
		if gateable(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// normalizeKeyVersion maps any fuzzed key into keys (a listed key maps to
// itself) and the version into the key's range 0..max.
func normalizeKeyVersion(keys []int16, key, version int16) (int16, int16) {
	found := false
	for _, k := range keys {
		if k == key {
			found = true
			break
		}
	}
	if !found {
		key = keys[int(uint16(key))%len(keys)]
	}
	maxV := kmsg.RequestForKey(key).MaxVersion()
	if version < 0 || version > maxV {
		version = int16(int(uint16(version)) % (int(maxV) + 1))
	}
	return key, version
}

// fuzzSeed is one seed input of a (key, version, body) fuzz target.
type fuzzSeed struct {
	key, version int16
	body         []byte
}

// validBodies returns, for each key and every version, a filled request or
// response body as kmsg encodes it, plus an empty body.
func validBodies(keys []int16, response bool) []fuzzSeed {
	var seeds []fuzzSeed
	for _, k := range keys {
		maxV := kmsg.RequestForKey(k).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			var m interface {
				SetVersion(int16)
				AppendTo([]byte) []byte
			}
			if response {
				m = kmsg.ResponseForKey(k)
			} else {
				m = kmsg.RequestForKey(k)
			}
			newFiller(int64(k)<<16|int64(v)).fillMessage(m, v)
			seeds = append(seeds, fuzzSeed{k, v, m.AppendTo(nil)})
		}
		seeds = append(seeds, fuzzSeed{k, 0, nil})
	}
	return seeds
}

// resetVirtualBrokers forgets every virtual broker and closes its listener,
// so that random node ids in fuzzed responses cannot exhaust descriptors.
func resetVirtualBrokers(p *Proxy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.vbrokers) < 32 {
		return
	}
	for _, vb := range p.vbrokers {
		if vb != nil && vb.ln != nil {
			vb.ln.Close()
		}
	}
	p.vbrokers = nil
	for name := range p.toVirtual {
		p.toVirtual[name] = map[int32]int32{}
		p.fromVirtual[name] = map[int32]int32{}
	}
}

func FuzzReadFrame(f *testing.F) {
	frame := func(n int32, payload []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(n)), payload...)
	}
	f.Add(frame(5, []byte("hello")), int32(1024))
	f.Add(frame(5, []byte("hello")), int32(4))
	f.Add(frame(-1, nil), int32(1024))
	f.Add(frame(10, []byte("short")), int32(1024))
	f.Add(append(frame(2, []byte("ab")), frame(3, []byte("cde"))...), int32(3))
	f.Add([]byte{0, 0}, int32(1024))
	f.Add(frame(0, nil), int32(0))
	f.Fuzz(func(t *testing.T, data []byte, max int32) {
		if max > 1<<16 {
			max = 1 << 16 // readFrame allocates the declared size up front
		}
		r := bytes.NewReader(data)
		var buf []byte
		rest := data
		for {
			got, err := readFrame(r, max, buf)
			if len(rest) < 4 {
				if err == nil {
					t.Fatalf("frame read from %d bytes", len(rest))
				}
				return
			}
			n := int32(binary.BigEndian.Uint32(rest))
			switch {
			case n < 0:
				if !errors.Is(err, errFrameNegative) {
					t.Fatalf("size %d: err %v, want errFrameNegative", n, err)
				}
				if r.Len() != len(rest)-4 {
					t.Fatalf("size %d: read past the size", n)
				}
				return
			case n > max:
				if !errors.Is(err, errFrameTooLarge) {
					t.Fatalf("size %d > max %d: err %v, want errFrameTooLarge", n, max, err)
				}
				if r.Len() != len(rest)-4 {
					t.Fatalf("size %d > max %d: read past the size", n, max)
				}
				return
			case int(n) > len(rest)-4:
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncated %d-byte frame: err %v, want io.ErrUnexpectedEOF", n, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("size %d of %d bytes, max %d: %v", n, len(rest)-4, max, err)
			}
			if int32(len(got)) > max || !bytes.Equal(got, rest[4:4+n]) {
				t.Fatalf("size %d max %d: got %d bytes %x", n, max, len(got), got)
			}
			rest = rest[4+n:]
			buf = got[:0]
		}
	})
}

func FuzzParseRequestHeader(f *testing.F) {
	for _, s := range validBodies(fuzzRewriteKeys, false) {
		req := kmsg.RequestForKey(s.key)
		req.SetVersion(s.version)
		id := "client"
		hdr := requestHeader{Key: s.key, Version: s.version, CorrID: 7, ClientID: &id, Flexible: req.IsFlexible()}
		f.Add(requestFrame(hdr, s.body))
	}
	f.Add([]byte{0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 5, 1, 1})
	f.Add([]byte{0x7f, 0xff, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, err := parseRequestHeader(frame)
		if err != nil {
			return
		}
		if h.BodyOffset < 10 || h.BodyOffset > len(frame) {
			t.Fatalf("body offset %d outside [10, %d]", h.BodyOffset, len(frame))
		}
		if h.Key != int16(binary.BigEndian.Uint16(frame)) || h.Version != int16(binary.BigEndian.Uint16(frame[2:])) ||
			h.CorrID != int32(binary.BigEndian.Uint32(frame[4:])) {
			t.Fatalf("header fields %+v do not match the bytes", h)
		}
		if h.Version < 0 {
			t.Fatalf("negative version %d accepted", h.Version)
		}
		if h.Known {
			req := kmsg.RequestForKey(h.Key)
			if req == nil || h.Version > req.MaxVersion() {
				t.Fatalf("key %d v%d marked known", h.Key, h.Version)
			}
		}
		if h.Flexible && !h.Known {
			t.Fatalf("key %d v%d flexible but unknown", h.Key, h.Version)
		}
		// Re-encoding the header keeps the body and every field.
		body := frame[h.BodyOffset:]
		h2, err := parseRequestHeader(requestFrame(h, body))
		if err != nil {
			t.Fatalf("re-encoded header does not parse: %v", err)
		}
		if h2.Key != h.Key || h2.Version != h.Version || h2.CorrID != h.CorrID ||
			!reflect.DeepEqual(h2.ClientID, h.ClientID) || h2.Known != h.Known || h2.Flexible != h.Flexible {
			t.Fatalf("re-encoded header %+v, want %+v", h2, h)
		}
	})
}

func FuzzRewriteRequest(f *testing.F) {
	for _, s := range validBodies(fuzzRewriteKeys, false) {
		f.Add(s.key, s.version, s.body)
	}
	p, u := newOfflineProxy(f)
	u.epochOffset.Store(testEpochOffset)
	for i, id := range testTopicIDs() { // virtual ids the proxy has presented
		p.topicNames.Store(id, fmt.Sprintf("topic-%d", i))
	}
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		key, version = normalizeKeyVersion(fuzzRewriteKeys, key, version)
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		id := "fuzz"
		frame := requestFrame(requestHeader{Key: key, Version: version, CorrID: 3, ClientID: &id, Flexible: req.IsFlexible()}, body)
		hdr, err := parseRequestHeader(frame)
		if err != nil {
			t.Fatalf("proxy-built header does not parse: %v", err)
		}
		c := &clientConn{p: p, staleFetchSession: len(body)%2 == 0}
		rw, err := p.rewriteRequest(deadCtx(), c, u, hdr, frame)
		if err != nil {
			return
		}
		out, local := rw.frame, rw.local
		if local != nil {
			if int32(binary.BigEndian.Uint32(local)) != hdr.CorrID {
				t.Fatalf("local response with correlation id %d, want %d", int32(binary.BigEndian.Uint32(local)), hdr.CorrID)
			}
			return
		}
		h2, err := parseRequestHeader(out)
		if err != nil {
			t.Fatalf("rewritten request header does not parse: %v", err)
		}
		if h2.Key != key || h2.Version != version || h2.CorrID != hdr.CorrID {
			t.Fatalf("rewritten header %+v, want key %d v%d corr %d", h2, key, version, hdr.CorrID)
		}
	})
}

func FuzzRewriteResponse(f *testing.F) {
	for _, s := range validBodies(fuzzRewriteKeys, true) {
		f.Add(s.key, s.version, s.body)
	}
	p, u := newOfflineProxy(f)
	u.epochOffset.Store(testEpochOffset)
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		key, version = normalizeKeyVersion(fuzzRewriteKeys, key, version)
		resetVirtualBrokers(p)
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		hdr := requestHeader{Key: key, Version: version, CorrID: 11, Known: true, Flexible: req.IsFlexible()}
		frame := responseFrame(key, version, hdr.CorrID, body)
		in := append([]byte(nil), frame...)
		out, err := rewriteResponseFor(p, u, hdr, frame)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(out, in[:4]) {
			t.Fatalf("correlation id changed")
		}
		hl, err := responseHeaderLen(key, version, out)
		if err != nil {
			t.Fatalf("rewritten response header: %v", err)
		}
		if bytes.Equal(out, in) {
			return // passed through
		}
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(version)
		if err := resp.ReadFrom(out[hl:]); err != nil {
			t.Fatalf("rewritten %s v%d response does not decode: %v", apiName(key), version, err)
		}
	})
}

func FuzzPatchBatchEpochs(f *testing.F) {
	f.Add(testBatch(5, 3), int32(100))
	f.Add(append(testBatch(5, 3), testBatch(-1, 1)...), int32(7))
	f.Add(append(testBatch(0, 2), testBatch(9, 1)[:30]...), int32(1))
	f.Add([]byte("not a batch at all, just bytes"), int32(3))
	f.Add(testBatch(1<<31-1, 1), int32(1))
	f.Fuzz(func(t *testing.T, data []byte, offset int32) {
		b := append([]byte(nil), data...)
		patchBatchEpochs(b, offset)

		// The partitionLeaderEpoch fields: bytes 12-15 of each batch whose
		// header (through the magic byte) is present, found by following
		// batch lengths from the start.
		epochAt := map[int]bool{}
		for pos := 0; len(data)-pos >= 17; {
			length := int32(binary.BigEndian.Uint32(data[pos+8:]))
			if length < 0 {
				break
			}
			if data[pos+16] == 2 {
				epochAt[pos+12] = true
			}
			pos += 12 + int(length)
		}
		for i := 0; i < len(data); i++ {
			if epochAt[i] {
				old := int32(binary.BigEndian.Uint32(data[i:]))
				now := int32(binary.BigEndian.Uint32(b[i:]))
				want := old
				if old >= 0 {
					want = old + offset
				}
				if now != want {
					t.Fatalf("epoch at byte %d: %d became %d, want %d", i, old, now, want)
				}
				i += 3
				continue
			}
			if b[i] != data[i] {
				t.Fatalf("byte %d outside any partitionLeaderEpoch changed: %#x → %#x", i, data[i], b[i])
			}
		}
	})
}

func FuzzRejectResponse(f *testing.F) {
	keys := fuzzGateKeys()
	for _, s := range validBodies(keys, false) {
		f.Add(s.key, s.version, s.body)
	}
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		key, version = normalizeKeyVersion(keys, key, version)
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		hdr := requestHeader{Key: key, Version: version, CorrID: 5, Known: true, Flexible: req.IsFlexible()}
		out, err := rejectResponse(hdr, body)
		if err != nil || out == nil {
			return
		}
		hl, err := responseHeaderLen(key, version, out)
		if err != nil {
			t.Fatalf("reject response header: %v", err)
		}
		if int32(binary.BigEndian.Uint32(out)) != hdr.CorrID {
			t.Fatalf("reject response correlation id")
		}
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(version)
		if err := resp.ReadFrom(out[hl:]); err != nil {
			t.Fatalf("reject %s v%d response does not decode: %v", apiName(key), version, err)
		}
	})
}

// FuzzIntersectVersions decodes two clusters' ApiVersions responses from
// random bytes: the proxy's answer must never exceed kmsg's maximum or
// either cluster's range.
func FuzzIntersectVersions(f *testing.F) {
	all := kmsg.NewPtrApiVersionsResponse()
	for k := int16(0); k <= maxKmsgKey()+2; k++ {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, 0, 999
		all.ApiKeys = append(all.ApiKeys, ak)
	}
	old := kmsg.NewPtrApiVersionsResponse()
	for k := int16(0); k <= 30; k++ {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, 1, 3
		old.ApiKeys = append(old.ApiKeys, ak)
	}
	f.Add(all.AppendTo(nil), old.AppendTo(nil))
	f.Add(old.AppendTo(nil), all.AppendTo(nil))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var known []*kmsg.ApiVersionsResponse
		for _, raw := range [][]byte{a, b} {
			r := kmsg.NewPtrApiVersionsResponse()
			if r.ReadFrom(raw) != nil {
				return
			}
			known = append(known, r)
		}
		ranges := func(r *kmsg.ApiVersionsResponse) map[int16][2]int16 {
			m := map[int16][2]int16{}
			for _, k := range r.ApiKeys {
				m[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
			}
			return m
		}
		ra, rb := ranges(known[0]), ranges(known[1])
		for _, k := range intersectVersions(known) {
			if k.MinVersion > k.MaxVersion {
				t.Fatalf("key %d: empty range %d-%d advertised", k.ApiKey, k.MinVersion, k.MaxVersion)
			}
			if req := kmsg.RequestForKey(k.ApiKey); req != nil && k.MaxVersion > req.MaxVersion() {
				t.Fatalf("key %d: v%d above kmsg's v%d", k.ApiKey, k.MaxVersion, req.MaxVersion())
			}
			for _, r := range []map[int16][2]int16{ra, rb} {
				c, ok := r[k.ApiKey]
				if !ok {
					t.Fatalf("key %d advertised though one cluster lacks it", k.ApiKey)
				}
				if k.MinVersion < c[0] || k.MaxVersion > c[1] {
					t.Fatalf("key %d: %d-%d outside a cluster's %d-%d", k.ApiKey, k.MinVersion, k.MaxVersion, c[0], c[1])
				}
			}
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpus under testdata/fuzz when
// SWITCHYARD_WRITE_FUZZ_CORPUS is set: the valid kmsg encodings the
// targets are seeded with, in the "go test fuzz v1" file format.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("SWITCHYARD_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set SWITCHYARD_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	write := func(target, name string, lines ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bytesLit := func(b []byte) string { return fmt.Sprintf("[]byte(%q)", b) }
	kvb := func(target string, seeds []fuzzSeed) {
		for _, s := range seeds {
			write(target, fmt.Sprintf("%s-v%d-%d", apiName(s.key), s.version, len(s.body)),
				fmt.Sprintf("int16(%d)", s.key), fmt.Sprintf("int16(%d)", s.version), bytesLit(s.body))
		}
	}
	kvb("FuzzRewriteRequest", validBodies(fuzzRewriteKeys, false))
	kvb("FuzzRewriteResponse", validBodies(fuzzRewriteKeys, true))
	kvb("FuzzRejectResponse", validBodies(fuzzGateKeys(), false))
	for _, s := range validBodies(fuzzRewriteKeys, false) {
		req := kmsg.RequestForKey(s.key)
		req.SetVersion(s.version)
		id := "client"
		frame := requestFrame(requestHeader{Key: s.key, Version: s.version, CorrID: 7, ClientID: &id, Flexible: req.IsFlexible()}, s.body)
		write("FuzzParseRequestHeader", fmt.Sprintf("%s-v%d-%d", apiName(s.key), s.version, len(s.body)), bytesLit(frame))
	}
	size := func(n int32, payload []byte) []byte { return append(kbin.AppendInt32(nil, n), payload...) }
	write("FuzzReadFrame", "two-frames", bytesLit(append(size(2, []byte("ab")), size(3, []byte("cde"))...)), "int32(1024)")
	write("FuzzReadFrame", "negative", bytesLit(size(-1, nil)), "int32(1024)")
	write("FuzzReadFrame", "too-large", bytesLit(size(5, []byte("hello"))), "int32(4)")
	write("FuzzReadFrame", "truncated", bytesLit(size(10, []byte("short"))), "int32(1024)")
	write("FuzzPatchBatchEpochs", "one-batch", bytesLit(testBatch(5, 3)), "int32(100)")
	write("FuzzPatchBatchEpochs", "two-batches-partial", bytesLit(append(testBatch(0, 2), testBatch(9, 1)[:30]...)), "int32(1)")
	write("FuzzPatchBatchEpochs", "no-epoch", bytesLit(append(testBatch(-1, 2), testBatch(4, 1)...)), "int32(-3)")
	for _, s := range validBodies([]int16{keyProduce}, false) {
		write("FuzzProduceSplit", fmt.Sprintf("v%d-%d", s.version, len(s.body)), fmt.Sprintf("int16(%d)", s.version), bytesLit(s.body), "uint64(5)")
	}
	for _, s := range refusalSeeds() {
		write("FuzzProduceRefusals", fmt.Sprintf("v%d-%d", s.version, len(s.body)), fmt.Sprintf("int16(%d)", s.version), bytesLit(s.body))
	}
	for _, s := range routedFetchSeeds() {
		write("FuzzRoutedFetchAnswer", fmt.Sprintf("v%d-%d", s.version, len(s.body)), fmt.Sprintf("int16(%d)", s.version), bytesLit(s.body))
	}
	for _, s := range routedFetchSeeds() {
		write("FuzzRoutedFetchAnswer", fmt.Sprintf("v%d-%d", s.version, len(s.body)), fmt.Sprintf("int16(%d)", s.version), bytesLit(s.body))
	}
	resps := validBodies([]int16{keyProduce}, true)
	for i, s := range resps {
		write("FuzzMergeProduce", fmt.Sprintf("v%d-%d", s.version, len(s.body)), fmt.Sprintf("int16(%d)", s.version),
			bytesLit(s.body), bytesLit(resps[(i+1)%len(resps)].body))
	}
}

// FuzzProduceSplit splits a Produce request of any shape by a fuzzed
// choice of partitions (route.go): never a panic, and a request Kafka's
// rules accept gives parts they accept too, holding exactly the chosen
// partitions in order.
func FuzzProduceSplit(f *testing.F) {
	for _, s := range validBodies([]int16{keyProduce}, false) {
		f.Add(s.version, s.body, uint64(5))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte, mask uint64) {
		_, version = normalizeKeyVersion([]int16{keyProduce}, keyProduce, version)
		w, err := walkProduce(body, version)
		if err != nil {
			return
		}
		id := "fuzz"
		head := requestFrame(requestHeader{Key: keyProduce, Version: version, CorrID: 9, ClientID: &id, Flexible: version >= 9}, nil)
		n := 0
		keep := func(ti, pi int) bool {
			i := 0
			for _, t := range w.topics[:ti] {
				i += len(t.parts)
			}
			return mask>>((i+pi)%64)&1 == 1
		}
		var want []int32
		for ti, t := range w.topics {
			for pi, p := range t.parts {
				if keep(ti, pi) {
					want = append(want, p.partition)
					n++
				}
			}
		}
		part := bytes.Join(produceFor(head, body, version, &w, keep), nil)
		if wirecheck.Request(keyProduce, version, body) != nil {
			return
		}
		hdr, err := parseRequestHeader(part)
		if err != nil {
			t.Fatalf("part header: %v", err)
		}
		req := kmsg.NewPtrProduceRequest()
		if err := decodeRequest(req, requestHeader{Key: keyProduce, Version: version}, part[hdr.BodyOffset:]); err != nil {
			t.Fatalf("the request is valid, its part is not: %v", err)
		}
		var got []int32
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				got = append(got, p.Partition)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("part holds partitions %v, want %v", got, want)
		}
	})
}

// FuzzMergeProduce merges two Produce responses of any bytes: an error or
// a response, never a panic.
func FuzzMergeProduce(f *testing.F) {
	resps := validBodies([]int16{keyProduce}, true)
	for i, s := range resps {
		f.Add(s.version, s.body, resps[(i+1)%len(resps)].body)
	}
	f.Fuzz(func(t *testing.T, version int16, a, b []byte) {
		_, version = normalizeKeyVersion([]int16{keyProduce}, keyProduce, version)
		frames := [][]byte{responseFrame(keyProduce, version, 4, a), responseFrame(keyProduce, version, 4, b)}
		order := []partKey{{topic: "t", partition: 0}, {partition: 1}}
		out, err := mergeProduce(version, 4, frames, order)
		if err != nil {
			return
		}
		hl, err := responseHeaderLen(keyProduce, version, out)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeResponse(kmsg.NewPtrProduceResponse(), keyProduce, version, out[hl:]); err != nil {
			t.Fatalf("merged response does not decode: %v", err)
		}
	})
}

// refusalSeeds are Produce responses of every version: the filler's, and
// one refusing two of three partitions NOT_LEADER_OR_FOLLOWER and
// LEADER_NOT_AVAILABLE.
func refusalSeeds() []fuzzSeed {
	seeds := validBodies([]int16{keyProduce}, true)
	for v := int16(0); v <= kmsg.NewPtrProduceResponse().MaxVersion(); v++ {
		r := kmsg.NewPtrProduceResponse()
		r.Version = v
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = "t", topicID(1)
		for p, code := range []int16{kerr.NotLeaderForPartition.Code, 0, kerr.LeaderNotAvailable.Code} {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode = int32(p), code
			if p == 0 {
				rp.BaseOffset = -1 // refused before appending
			} else {
				rp.BaseOffset, rp.LogStartOffset = 100, 0
			}
			if v >= 8 && code == 0 {
				rp.ErrorRecords = append(rp.ErrorRecords, kmsg.ProduceResponseTopicPartitionErrorRecord{RelativeOffset: 1})
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = append(r.Topics, rt)
		seeds = append(seeds, fuzzSeed{keyProduce, v, r.AppendTo(nil)})
	}
	return seeds
}

// FuzzProduceRefusals walks Produce responses of any bytes for the
// partitions to re-send (resend.go): never a panic, and for a response
// kmsg decodes, exactly the partitions it refused with a resendable code,
// in order.
func FuzzProduceRefusals(f *testing.F) {
	for _, s := range refusalSeeds() {
		f.Add(s.version, s.body)
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		_, version = normalizeKeyVersion([]int16{keyProduce}, keyProduce, version)
		got, err := walkProduceRefusals(body, version, nil)
		resp := kmsg.NewPtrProduceResponse()
		if derr := decodeResponse(resp, keyProduce, version, body); derr != nil {
			return // the walk may stop anywhere; it must only not panic
		}
		if err != nil {
			t.Fatalf("kmsg decodes the response, the walk fails: %v", err)
		}
		var want []refusedPart
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if resendable(rp.ErrorCode) {
					k := partKey{partition: rp.Partition}
					if version >= 13 {
						k.id = rt.TopicID
					} else {
						k.topic = rt.Topic
					}
					r := refusedPart{key: k, code: rp.ErrorCode, appended: rp.BaseOffset >= 0 && (version < 5 || rp.LogStartOffset >= 0)}
					if r.appended {
						r.baseOffset = rp.BaseOffset
					}
					want = append(want, r)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("walked refusals %v, decoded %v", got, want)
		}
	})
}

// routedFetchSeeds are Fetch responses (v12+) of one topic, partitions 0-2:
// records, NOT_LEADER_OR_FOLLOWER with a leader hint, OFFSET_OUT_OF_RANGE;
// each version once plain and once with broker endpoints (the decoded
// path).
func routedFetchSeeds() []fuzzSeed {
	var seeds []fuzzSeed
	for v := int16(12); v <= kmsg.NewPtrFetchResponse().MaxVersion(); v++ {
		for _, endpoints := range []bool{false, true} {
			r := kmsg.NewPtrFetchResponse()
			r.Version = v
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = "t", topicID(1)
			for p, code := range []int16{0, kerr.NotLeaderForPartition.Code, kerr.OffsetOutOfRange.Code} {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.HighWatermark = int32(p), code, 10
				if code == 0 {
					rp.RecordBatches = testBatch(3, 2)
				}
				if code == kerr.NotLeaderForPartition.Code {
					rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = 2, 4
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			r.Topics = append(r.Topics, rt)
			if endpoints {
				b := kmsg.NewFetchResponseBroker()
				b.NodeID, b.Host, b.Port = 2, "10.0.0.2", 9092
				r.Brokers = append(r.Brokers, b)
			}
			seeds = append(seeds, fuzzSeed{keyFetch, v, r.AppendTo(nil)})
		}
	}
	return seeds
}

// FuzzRoutedFetchAnswer takes a broker's answer of any bytes to a routed
// sub-fetch of partitions 0-2 (fetchsplice.go) and splices the client's
// answer from it: never a panic, and whatever the proxy accepts gives the
// client a response that decodes, with every partition asked, in order,
// and no "not the leader" error.
func FuzzRoutedFetchAnswer(f *testing.F) {
	for _, s := range routedFetchSeeds() {
		f.Add(s.version, s.body)
	}
	p, u := benchProxy(f, map[string][16]byte{"t": topicID(1)})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		maxV := kmsg.NewPtrFetchResponse().MaxVersion()
		if version < 12 || version > maxV {
			version = 12 + (version&0x7fff)%(maxV-11)
		}
		c := &clientConn{p: p, log: zap.NewNop()}
		fr := c.fetchRouter()
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.ReplicaID = version, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = "t", topicID(1)
		plan := &fetchPlan{u: u, req: req}
		sf := &subFetch{version: version, asked: map[topicPartition]int64{}}
		for i := range int32(3) {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition = i
			rt.Partitions = append(rt.Partitions, rp)
			k := topicPartition{"t", i}
			plan.parts = append(plan.parts, fetchPlanPart{key: k, pi: int(i), node: 1})
			sf.asked[k] = 0
		}
		req.Topics = append(req.Topics, rt)
		answers, _, err := c.subFetchEntries(ctx, u, sf, append([]byte(nil), body...))
		if err != nil {
			return
		}
		got := make([]*fetchAnswer, 3)
		for i := range plan.parts {
			got[i] = answers[plan.parts[i].key]
		}
		hdr := requestHeader{Key: keyFetch, Version: version, CorrID: 7, Known: true, Flexible: true}
		frame := bytes.Join(c.spliceRoutedFetch(fr, plan, hdr, got), nil)
		hl, err := responseHeaderLen(keyFetch, version, frame)
		if err != nil {
			t.Fatalf("spliced answer: header: %v", err)
		}
		resp := kmsg.NewPtrFetchResponse()
		if err := decodeResponse(resp, keyFetch, version, frame[hl:]); err != nil {
			t.Fatalf("spliced answer does not decode: %v", err)
		}
		var parts []int32
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				parts = append(parts, rp.Partition)
				if absorbedFetchError(rp.ErrorCode) {
					t.Errorf("partition %d answered %v to the client", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
				}
			}
		}
		if fmt.Sprint(parts) != "[0 1 2]" || resp.SessionID != 0 || resp.ErrorCode != 0 {
			t.Fatalf("spliced answer: partitions %v, session %d, error %d; want [0 1 2], no session, no error", parts, resp.SessionID, resp.ErrorCode)
		}
	})
}
