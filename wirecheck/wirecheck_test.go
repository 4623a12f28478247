package wirecheck

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fill sets every exported field of the struct v points at to random
// content: slices of zero to three elements, strings and bytes of a few
// characters, nullable values null now and then. Tagged fields get values
// too, so they are encoded. Version fields are left for SetVersion.
func fill(rng *rand.Rand, v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer: // nullable strings and structs
		if rng.IntN(4) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		s := reflect.New(v.Type().Elem())
		fill(rng, s.Elem(), depth)
		v.Set(s)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Name == "Version" || f.Type == reflect.TypeFor[kmsg.Tags]() {
				continue
			}
			fill(rng, v.Field(i), depth+1)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, rng.IntN(8))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			v.SetBytes(b)
			return
		}
		n := rng.IntN(4)
		if depth > 6 {
			n = 0
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(rng, v.Index(i), depth)
		}
	case reflect.String:
		v.SetString(strings.Repeat("x", rng.IntN(6)))
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(rng.Uint32()))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(rng.Uint32()))
	case reflect.Float64:
		v.SetFloat(rng.Float64())
	}
}

type message interface {
	SetVersion(int16)
	MaxVersion() int16
	AppendTo([]byte) []byte
	ReadFrom([]byte) error
	Key() int16
}

// everyMessage calls fn for every request and response kmsg knows, at every
// version both kmsg and this package know, perVersion times with random
// content drawn from rng.
func everyMessage(t *testing.T, rng *rand.Rand, perVersion int, fn func(t *testing.T, request bool, key, version int16, body []byte)) {
	checked := 0
	for key := int16(0); key < 200; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for _, request := range []bool{true, false} {
			var m message = req
			knows := KnowsRequest
			if !request {
				m, knows = req.ResponseKind().(message), KnowsResponse
			}
			for v := int16(0); v <= m.MaxVersion(); v++ {
				if !knows(key, v) {
					continue
				}
				for range perVersion {
					fresh := reflect.New(reflect.TypeOf(m).Elem())
					fill(rng, fresh.Elem(), 0)
					msg := fresh.Interface().(message)
					msg.SetVersion(v)
					body := msg.AppendTo(nil)
					fn(t, request, key, v, body)
					checked++
				}
			}
		}
	}
	if checked < 1000 {
		t.Fatalf("only %d messages checked", checked)
	}
}

// TestEncodedMessagesPass: whatever kmsg encodes, at every version both
// know, passes the walk, which reads it to its last byte (a walk that
// stopped short would disagree with kmsg on the layout) and meets no tag
// kmsg knows that no version of Kafka's definitions defines (kmsg would
// decode what the walk never looked at); every strict prefix fails, as it
// fails to decode. Tags kmsg writes at versions where Kafka does not
// define them (strays) are counted: they are renumbered, never decoded.
func TestEncodedMessagesPass(t *testing.T) {
	strays := map[string]bool{}
	everyMessage(t, rand.New(rand.NewPCG(1, 2)), 20, func(t *testing.T, request bool, key, version int16, body []byte) {
		apis := responses
		if request {
			apis = requests
		}
		hooks := &walker{
			onStray: func(f *field, _, _ int) {
				strays[fmt.Sprintf("key %d v%d %s (tag %d)", key, version, f.name, f.tag)] = true
			},
			onUnknown: func(tag uint32) {
				t.Fatalf("key %d v%d request=%v: kmsg encoded tag %d, which no version of Kafka's definitions knows", key, version, request, tag)
			},
		}
		end, err := check(apis, request, key, version, body, hooks)
		if err != nil {
			t.Fatalf("key %d v%d request=%v: %v\nbody %x", key, version, request, err, body)
		}
		if end != len(body) {
			t.Fatalf("key %d v%d request=%v: the walk ended at byte %d of %d", key, version, request, end, len(body))
		}
		for n := range len(body) {
			if _, err := check(apis, request, key, version, body[:n], nil); err == nil {
				t.Fatalf("key %d v%d request=%v: the %d-byte prefix of a %d-byte body passed", key, version, request, n, len(body))
			}
		}
	})
	t.Logf("%d stray tags renumbered (opaque), e.g. %v", len(strays), firstKeys(strays, 5))
}

func firstKeys(m map[string]bool, n int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out[:min(n, len(out))]
}

// TestEveryKmsgVersionIsKnown: every version kmsg can decode has a
// definition here; otherwise the proxy could not decode it.
func TestEveryKmsgVersionIsKnown(t *testing.T) {
	for key := int16(0); key < 200; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			if !KnowsRequest(key, v) || !KnowsResponse(key, v) {
				t.Errorf("key %d (%T) v%d: no definition (request %v, response %v)", key, req, v, KnowsRequest(key, v), KnowsResponse(key, v))
			}
		}
	}
}

// hostile is a flexible Metadata v12 request body whose top-level tag
// section declares 2^32-1 tagged fields: the request issue 14 reported
// holding a core for 82 s in kmsg.
func hostile() []byte {
	b := []byte{0}                            // topics: null (compact)
	b = append(b, 1)                          // allow auto topic creation
	b = append(b, 0)                          // include topic authorized operations
	return kbin.AppendUvarint(b, 0xFFFF_FFFF) // tagged fields
}

func TestHostileTagCount(t *testing.T) {
	err := Request(3, 12, hostile())
	var me *MalformedError
	if !errors.As(err, &me) {
		t.Fatalf("got %v, want a MalformedError", err)
	}
	if !strings.Contains(me.Error(), "tagged field count 4294967295 exceeds the 0 bytes left") || me.API != "Metadata" {
		t.Fatalf("error %q does not say what is wrong", me)
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request bool
		key, v  int16
		body    []byte
		want    string
	}{
		{"array count beyond the body", true, 3, 4, []byte{0x7f, 0xff, 0xff, 0xff, 0}, "Topics count 2147483647 exceeds the 1 bytes left"},
		{"negative array count", true, 3, 4, []byte{0xff, 0xff, 0xff, 0xfe, 0}, "negative length -2"},
		{"string longer than the body", true, 10, 0, []byte{0x00, 0x09, 'a'}, "Key of 9 bytes exceeds the 1 bytes left"},
		{"null non-nullable string", true, 10, 0, []byte{0xff, 0xff}, "Key is null but not nullable"},
		{"elements smaller than their least size", true, 3, 4, []byte{0, 0, 0, 4, 0, 1, 'a', 0, 1, 'b', 0}, "Topics count 4 exceeds the 7 bytes left (2 bytes or more each)"},
		{"bad varint", true, 3, 12, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, "bad or truncated varint"},
		{"tag larger than the body", true, 3, 12, []byte{1, 0, 0, 1, 0, 50, 1}, "tagged field 0 of 50 bytes exceeds the 1 bytes left"},
		{"truncated fixed field", false, 12, 0, []byte{0}, "ErrorCode needs 2 bytes, 1 left"},
		{"known tagged struct too short", false, 1, 12, fetchWithShortCurrentLeader(), "LeaderEpoch needs 4 bytes, 0 left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := Request
			if !tc.request {
				check = Response
			}
			err := check(tc.key, tc.v, tc.body)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// fetchWithShortCurrentLeader is a Fetch v12 response with one partition
// whose CurrentLeader tag (two int32s) is 4 bytes long.
func fetchWithShortCurrentLeader() []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(12)
	t := kmsg.NewFetchResponseTopic()
	t.Topic = "t"
	p := kmsg.NewFetchResponseTopicPartition()
	t.Partitions = append(t.Partitions, p)
	resp.Topics = append(resp.Topics, t)
	b := resp.AppendTo(nil)
	// The partition ends with records (null: 0) and an empty tag section
	// (0), followed by the topic's and the response's tag sections.
	if b[len(b)-4] != 0 || b[len(b)-3] != 0 {
		panic("unexpected encoding")
	}
	out := append([]byte{}, b[:len(b)-3]...)
	out = append(out, 1, 1, 4, 0, 0, 0, 1) // one tag: CurrentLeader, 4 bytes
	return append(out, 0, 0)
}

func TestUnknownVersion(t *testing.T) {
	if err := Request(3, 999, nil); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("got %v, want ErrUnknownVersion", err)
	}
	if err := Request(9999, 0, nil); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("got %v, want ErrUnknownVersion", err)
	}
}

// BenchmarkHostile measures the cost of refusing the hostile request; the
// issue asks for at most 1 ms of CPU per malformed request of any size.
func BenchmarkHostile(b *testing.B) {
	body := hostile()
	for b.Loop() {
		if Request(3, 12, body) == nil {
			b.Fatal("passed")
		}
	}
}

// BenchmarkLargeMalformed walks a 1 MiB Produce request body whose last
// byte is cut off: the whole body is walked before the fault shows.
func BenchmarkLargeMalformed(b *testing.B) {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	for i := range 4096 {
		t := kmsg.NewProduceRequestTopic()
		t.Topic = "topic"
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition = int32(i)
		p.Records = make([]byte, 200)
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
	}
	body := req.AppendTo(nil)
	body = body[:len(body)-1]
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if Request(0, 9, body) == nil {
			b.Fatal("passed")
		}
	}
}

// fuzzSeeds adds, for a spread of APIs, kmsg-encoded bodies with random
// content to the fuzzer's corpus.
func fuzzSeeds(f *testing.F, request bool) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, key := range []int16{0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 17, 19, 21, 22, 23, 24, 25, 26, 28, 32, 36, 42, 55, 60, 68, 69, 75, 78} {
		req := kmsg.RequestForKey(key)
		var m message = req
		if !request {
			m = req.ResponseKind().(message)
		}
		for v := range m.MaxVersion() + 1 { // every version: tags differ by version
			fresh := reflect.New(reflect.TypeOf(m).Elem())
			fill(rng, fresh.Elem(), 0)
			msg := fresh.Interface().(message)
			msg.SetVersion(v)
			f.Add(key, v, msg.AppendTo(nil))
		}
	}
	f.Add(int16(3), int16(12), hostile())
}

// differential is the fuzzers' property: a body that passes the walk
// decodes with kmsg, at once. The walk is what makes decoding safe, so a
// body it passes that kmsg cannot read, or reads slowly, means the two
// disagree on the layout.
func differential(t *testing.T, request bool, key, version int16, body []byte) {
	var m message
	check := Request
	if request {
		r := kmsg.RequestForKey(key)
		if r == nil {
			return
		}
		m = r
	} else {
		r := kmsg.ResponseForKey(key)
		if r == nil {
			return
		}
		m, check = r, Response
	}
	if version < 0 || version > m.MaxVersion() {
		return
	}
	body = append([]byte(nil), body...) // the walk may renumber stray tags in place
	if err := check(key, version, body); err != nil {
		return
	}
	m.SetVersion(version)
	done := make(chan error, 1)
	go func() { done <- m.ReadFrom(body) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("key %d v%d: the walk passed a body kmsg cannot decode: %v", key, version, err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("key %d v%d: the walk passed a body kmsg is still decoding after 2 s", key, version)
	}
}

func FuzzRequest(f *testing.F) {
	fuzzSeeds(f, true)
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		differential(t, true, key, version, body)
	})
}

func FuzzResponse(f *testing.F) {
	fuzzSeeds(f, false)
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		differential(t, false, key, version, body)
	})
}

// denseMetadata is a Metadata v12 request body of about size bytes made of
// the smallest topic entries there are (an id, an empty name, no tags):
// the most elements a walk can meet per byte. Its last byte is cut off, so
// the walk reaches the end before it fails.
func denseMetadata(size int) []byte {
	n := size / 18
	b := kbin.AppendUvarint(nil, uint32(n+1))
	for range n {
		b = append(b, make([]byte, 16)...) // topic id
		b = append(b, 1, 0)                // name "" (compact), no tags
	}
	b = append(b, 1, 0, 0) // allow auto creation, authorized operations, tags
	return b[:len(b)-1]
}

// BenchmarkDenseMalformed is the worst case per byte: every element as
// small as it can be.
func BenchmarkDenseMalformed(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		body := denseMetadata(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if Request(3, 12, body) == nil {
					b.Fatal("passed")
				}
			}
		})
	}
}

// BenchmarkDenseKmsgDecode decodes the valid (uncut) dense body with kmsg,
// for comparison: what the walk costs next to the decode it guards.
func BenchmarkDenseKmsgDecode(b *testing.B) {
	body := append(denseMetadata(1<<20), 0)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(12)
		if err := req.ReadFrom(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTypical walks what passes on the hot path: a Produce of three
// partitions of 16 KiB batches and a Fetch request of three partitions
// (every request the proxy forwards is walked once), and a Fetch response
// carrying them.
func BenchmarkTypical(b *testing.B) {
	produce := kmsg.NewPtrProduceRequest()
	produce.SetVersion(11)
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(16)
	fresp := kmsg.NewPtrFetchResponse()
	fresp.SetVersion(16)
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "orders"
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "orders"
	rt := kmsg.NewFetchResponseTopic()
	rt.Topic = "orders"
	for i := range int32(3) {
		pp := kmsg.NewProduceRequestTopicPartition()
		pp.Partition, pp.Records = i, make([]byte, 16<<10)
		pt.Partitions = append(pt.Partitions, pp)
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = i
		ft.Partitions = append(ft.Partitions, fp)
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition, rp.RecordBatches = i, make([]byte, 16<<10)
		rt.Partitions = append(rt.Partitions, rp)
	}
	produce.Topics = append(produce.Topics, pt)
	fetch.Topics = append(fetch.Topics, ft)
	fresp.Topics = append(fresp.Topics, rt)
	for _, tc := range []struct {
		name    string
		check   func(int16, int16, []byte) error
		key, v  int16
		message interface{ AppendTo([]byte) []byte }
	}{
		{"ProduceRequest", Request, 0, 11, produce},
		{"FetchRequest", Request, 1, 16, fetch},
		{"FetchResponse", Response, 1, 16, fresp},
	} {
		body := tc.message.AppendTo(nil)
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if err := tc.check(tc.key, tc.v, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// decodesWithin decodes body with kmsg and fails if that takes more than
// a second: the spin a hostile tag count causes.
func decodesWithin(t *testing.T, m message, version int16, body []byte) {
	t.Helper()
	m.SetVersion(version)
	done := make(chan error, 1)
	go func() { done <- m.ReadFrom(body) }() // ends: kmsg's loops are bounded once the walk passed
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kmsg decode after the walk: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("kmsg still decoding after 1 s: the walk let a hostile tag count through")
	}
}

// strayTail replaces the empty top-level tag section that ends body with
// one tag of the given number whose content is prefix followed by a tag
// count of 2^32-1.
func strayTail(body []byte, tag uint32, prefix []byte) []byte {
	content := kbin.AppendUvarint(append([]byte(nil), prefix...), 0xffff_ffff)
	out := append([]byte(nil), body[:len(body)-1]...)
	out = kbin.AppendUvarint(out, 1)
	out = kbin.AppendUvarint(out, tag)
	out = kbin.AppendUvarint(out, uint32(len(content)))
	return append(out, content...)
}

// TestStrayTags: kmsg decodes a tagged field it knows at every flexible
// version, while Kafka defines it at some versions only. Found by review:
// a Fetch v12 request carrying ReplicaState (defined from v15) or a Produce
// v9 response carrying CurrentLeader (from v10), with a tag count of
// 2^32-1 inside, passed the walk, which skipped the tag, and held kmsg for
// a minute and a half. Where kmsg reads such a stray as at the field's
// first version (TestStrayCalibration measures where), the walk walks it
// so and refuses the hostile count; where kmsg lays it out otherwise
// (Vote v0's NodeEndpoints), the walk renumbers it and kmsg keeps it
// undecoded.
func TestStrayTags(t *testing.T) {
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(12)
	fetchBody := strayTail(fetch.AppendTo(nil), 1, make([]byte, 12)) // ReplicaState: id, epoch, tags
	if err := Request(1, 12, fetchBody); err == nil || !strings.Contains(err.Error(), "tagged field count 4294967295") {
		t.Errorf("Fetch v12 with a hostile stray ReplicaState: %v, want the count refused", err)
	}

	produce := kmsg.NewPtrProduceResponse()
	produce.SetVersion(9)
	pt := kmsg.NewProduceResponseTopic()
	pt.Topic = "t"
	pt.Partitions = append(pt.Partitions, kmsg.NewProduceResponseTopicPartition())
	produce.Topics = append(produce.Topics, pt)
	b := produce.AppendTo(nil)
	// The partition's empty tag section is followed by the topic's, the
	// throttle time and the response's: put the stray in the partition.
	part := b[:len(b)-6]
	rest := append([]byte(nil), b[len(b)-6:]...)
	produceBody := append(strayTail(part, 0, make([]byte, 8)), rest...) // CurrentLeader: id, epoch, tags
	if err := Response(0, 9, produceBody); err == nil || !strings.Contains(err.Error(), "tagged field count 4294967295") {
		t.Errorf("Produce v9 response with a hostile stray CurrentLeader: %v, want the count refused", err)
	}

	// Vote v0 response: kmsg reads NodeEndpoints' elements without their
	// fields (its definition gates them by the message's version), so no
	// walk can follow it: the stray is renumbered.
	vote := kmsg.NewPtrVoteResponse()
	vote.SetVersion(0)
	voteBody := strayTail(vote.AppendTo(nil), 0, []byte{2}) // one element: its tag count follows
	if err := Response(52, 0, voteBody); err != nil {
		t.Fatalf("Vote v0 response with a stray NodeEndpoints: %v", err)
	}
	got := kmsg.NewPtrVoteResponse()
	decodesWithin(t, got, 0, voteBody)
	if len(got.NodeEndpoints) != 0 || got.UnknownTags.Len() != 1 {
		t.Errorf("the opaque stray was decoded (%d node endpoints, %d unknown tags)", len(got.NodeEndpoints), got.UnknownTags.Len())
	}
}

// TestStructElementsBounded: a valid but dense message of more struct
// elements than MaxStructElements is refused before a decoder allocates
// them (found by review: a 16 MiB Produce v9 of empty topics made the
// proxy allocate 256 MiB), while one just below passes.
func TestStructElementsBounded(t *testing.T) {
	produce := func(n int) []byte {
		b := []byte{0, 0, 1, 0, 0, 0x75, 0x30} // null txn id, acks 1, timeout 30000
		b = kbin.AppendUvarint(b, uint32(n+1))
		for range n {
			b = append(b, 1, 1, 0) // name "", no partitions, no tags
		}
		return append(b, 0)
	}
	if err := Request(0, 9, produce(MaxStructElements)); err != nil {
		t.Fatalf("%d elements: %v", MaxStructElements, err)
	}
	err := Request(0, 9, produce(MaxStructElements+1))
	if err == nil || !strings.Contains(err.Error(), "more than 1048576 struct elements (TopicData)") {
		t.Fatalf("%d elements: %v, want refused", MaxStructElements+1, err)
	}
}
