package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGateRejectProduceRetries: under a REJECT gate on Produce, franz-go
// producers keep retrying (the gate's NOT_ENOUGH_REPLICAS is retriable) and
// surface no error; once the gate is cleared every record is acknowledged
// and present exactly once, in order.
func TestGateRejectProduceRetries(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	tp := startProxy(t, source, nil)
	tests := []struct {
		name string
		opts []kgo.Opt
	}{
		{"non-idempotent", []kgo.Opt{kgo.DisableIdempotentWrite()}},
		{"idempotent", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := kafkatest.Topic(t, "reject")
			source.CreateTopic(t, topic, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cl := tp.client(t, append(tt.opts, retryFast())...)
			produceTagged(ctx, t, cl, topic, "v", 0, 1) // producer id and metadata in place

			if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateReject}); err != nil {
				t.Fatal(err)
			}
			rejects := func() float64 {
				return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", "reject")
			}
			before := rejects()
			const n = 50
			p := startProducing(ctx, cl, topic, "v", 1, n)
			eventually(t, 20*time.Second, "producer retrying against the gate", func() error {
				if got := rejects() - before; got < 5 {
					return fmt.Errorf("%v rejects", got)
				}
				return nil
			})
			if done, err := p.state(); done != 0 {
				t.Fatalf("%d records completed while the gate was up (first error %v); want all pending", done, err)
			}
			tp.ClearGate()
			if err := p.wait(ctx); err != nil {
				t.Fatalf("after the gate lifted: %v", err)
			}
			got := readPartitionZero(ctx, t, source, topic, n)
			if want := taggedValues("v", 0, n); !slices.Equal(got, want) {
				t.Errorf("partition holds %v..., want v-0..v-%d once each in order", firstFew(got), n-1)
			}
		})
	}
}

// TestGateRejectResponsesWellFormed sends, for every gateable API key and
// every version both kmsg and the clusters support, a request through a
// proxy that rejects that key, and decodes the answer at that version. Each
// error code on the wire carries the key's retriable code from gateErrors
// (Fetch: none, an empty answer; checkEmptyFetch), and per-partition
// answers name exactly the request's topics and partitions.
func TestGateRejectResponsesWellFormed(t *testing.T) {
	source, target := kafkatest.Pair(t)
	tp := startProxy(t, source, target)
	keys := make([]int16, 0, len(gateErrors))
	for k := range gateErrors {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	if err := tp.SetGate(Gate{APIKeys: keys, Mode: GateReject}); err != nil {
		t.Fatal(err)
	}
	rc := dialWire(t, tp.Addr().String(), "reject-probe")
	vs := rc.roundTrip(kmsg.NewPtrApiVersionsRequest()).(*kmsg.ApiVersionsResponse)
	ranges := map[int16][2]int16{}
	for _, k := range vs.ApiKeys {
		ranges[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}

	// Topics and partitions answered one by one; other keys answer with one
	// top-level code (checked by the error-code rule alone).
	perPartition := map[int16]bool{keyProduce: true, keyFetch: true, keyListOffsets: true,
		keyOffsetForLeaderEpoch: true, keyOffsetCommit: true, keyTxnOffsetCommit: true, keyAddPartitionsToTxn: true}
	for _, key := range keys {
		rng, ok := ranges[key]
		if !ok {
			t.Logf("%s (%d): not supported by the clusters, skipped", apiName(key), key)
			continue
		}
		code := gateErrors[key]
		for v := rng[0]; v <= rng[1]; v++ {
			t.Run(fmt.Sprintf("%s/v%d", apiName(key), v), func(t *testing.T) {
				req := representativeRequest(key, v)
				wire := kmsg.RequestForKey(key) // the request as the proxy sees it
				wire.SetVersion(v)
				if err := wire.ReadFrom(req.AppendTo(nil)); err != nil {
					t.Fatalf("re-decode request: %v", err)
				}
				resp := rc.roundTrip(req)
				if key == keyFetch {
					checkEmptyFetch(t, wire.(*kmsg.FetchRequest), resp.(*kmsg.FetchResponse))
				} else {
					checkErrorCodes(t, key, resp, code)
				}
				switch {
				case perPartition[key] || (key == keyOffsetFetch && v < 2):
					// OffsetFetch v0-1 has no top-level error code: the
					// partitions are the only place to say "retry".
					want, got := partitionKeys(reflect.ValueOf(wire)), partitionKeys(reflect.ValueOf(resp))
					if len(want) == 0 {
						t.Fatalf("representative request names no partitions")
					}
					if !slices.Equal(got, want) {
						t.Errorf("response partitions %v, want the request's %v", got, want)
					}
				case key == keyOffsetFetch && v >= 8:
					var want, got []string
					for _, g := range wire.(*kmsg.OffsetFetchRequest).Groups {
						want = append(want, g.Group)
					}
					for _, g := range resp.(*kmsg.OffsetFetchResponse).Groups {
						got = append(got, g.Group)
					}
					if !slices.Equal(got, want) {
						t.Errorf("response groups %v, want %v", got, want)
					}
				case key == keyFindCoordinator && v >= 4:
					var got []string
					for _, c := range resp.(*kmsg.FindCoordinatorResponse).Coordinators {
						got = append(got, c.Key)
					}
					if want := wire.(*kmsg.FindCoordinatorRequest).CoordinatorKeys; !slices.Equal(got, want) {
						t.Errorf("response coordinator keys %v, want %v", got, want)
					}
				}
			})
		}
	}

	t.Run("acks=0 produce gets no response", func(t *testing.T) {
		prange, ok := ranges[keyProduce]
		if !ok {
			t.Fatal("clusters support no Produce version")
		}
		for _, v := range []int16{prange[0], prange[1]} {
			p := representativeRequest(keyProduce, v).(*kmsg.ProduceRequest)
			p.Acks = 0
			rc.send(p)
			// The next answer is the next request's: a rejected Produce
			// (made by the proxy) after a forwarded Metadata.
			md := kmsg.NewPtrMetadataRequest()
			md.Version = 1
			rc.roundTrip(md)
			rc.send(p)
			acked := representativeRequest(keyProduce, v)
			resp := rc.roundTrip(acked).(*kmsg.ProduceResponse)
			checkErrorCodes(t, keyProduce, resp, gateErrors[keyProduce])
		}
	})
}

// TestGateHoldForwardsInOrder: requests held by a HOLD gate reach the
// cluster, in arrival order, when the gate lifts; none is lost and none is
// answered while the gate is up.
func TestGateHoldForwardsInOrder(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "hold")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget, c.MaxHold = 30*time.Second, 30*time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := tp.client(t)
	produceTagged(ctx, t, cl, topic, "v", 0, 1)

	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	p := startProducing(ctx, cl, topic, "v", 1, n)
	eventually(t, 10*time.Second, "produce held", func() error {
		if tp.Status().Held < 1 || gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", "hold") < 1 {
			return errNotYet
		}
		return nil
	})
	if done, err := p.state(); done != 0 {
		t.Fatalf("%d records completed while held (first error %v)", done, err)
	}
	waitRecordCount(ctx, t, source, topic, 1) // nothing reached the cluster
	tp.ClearGate()
	if err := p.wait(ctx); err != nil {
		t.Fatalf("after the gate lifted: %v", err)
	}
	got := readPartitionZero(ctx, t, source, topic, n)
	if want := taggedValues("v", 0, n); !slices.Equal(got, want) {
		t.Errorf("partition holds %v..., want v-0..v-%d once each in order", firstFew(got), n-1)
	}
	if st := tp.Status(); st.Held != 0 {
		t.Errorf("%d requests still held after the gate lifted", st.Held)
	}
	if exp := gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "outcome", "hold_expired"); exp != 0 {
		t.Errorf("%v holds expired under a 30s budget", exp)
	}
}

// TestGateHoldBudgetExpires: a request held longer than HoldBudget is
// answered with the API's retriable error (outcome hold_expired), and a
// client that retries succeeds once the gate lifts.
func TestGateHoldBudgetExpires(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "holdexp")
	source.CreateTopic(t, topic, 1)
	const budget = 300 * time.Millisecond
	tp := startProxy(t, source, nil, func(c *Config) { c.HoldBudget = budget })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	expired := func() float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", "hold_expired")
	}
	if err := tp.SetGate(Gate{APIKeys: []int16{keyProduce}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}

	t.Run("raw request", func(t *testing.T) {
		before := expired()
		rc := dialWire(t, tp.Addr().String(), "raw")
		start := time.Now()
		resp := rc.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "raw")).(*kmsg.ProduceResponse)
		took := time.Since(start)
		if took < budget {
			t.Errorf("answered after %v, before the %v hold budget", took, budget)
		}
		if len(resp.Topics) != 1 || resp.Topics[0].Topic != topic || len(resp.Topics[0].Partitions) != 1 ||
			resp.Topics[0].Partitions[0].ErrorCode != kerr.NotEnoughReplicas.Code {
			t.Errorf("response %+v, want %s/0 with NOT_ENOUGH_REPLICAS", resp.Topics, topic)
		}
		if got := expired() - before; got != 1 {
			t.Errorf("hold_expired grew by %v, want 1", got)
		}
	})

	t.Run("franz-go retries", func(t *testing.T) {
		cl := tp.client(t, retryFast())
		before := expired()
		const n = 20
		p := startProducing(ctx, cl, topic, "v", 0, n)
		eventually(t, 20*time.Second, "two expired holds", func() error {
			if got := expired() - before; got < 2 {
				return fmt.Errorf("%v expired", got)
			}
			return nil
		})
		if done, err := p.state(); done != 0 {
			t.Fatalf("%d records completed under the gate (first error %v)", done, err)
		}
		tp.ClearGate()
		if err := p.wait(ctx); err != nil {
			t.Fatalf("after the gate lifted: %v", err)
		}
		got := readPartitionZero(ctx, t, source, topic, n)
		if want := taggedValues("v", 0, n); !slices.Equal(got, want) {
			t.Errorf("partition holds %v..., want v-0..v-%d once each in order", firstFew(got), n-1)
		}
	})
}

// TestSetGateInvalid: SetGate refuses a gate it cannot apply, with an error
// wrapping ErrInvalidGate that names the offending key or mode, and leaves
// the gate in force unchanged.
func TestSetGateInvalid(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	tp := startProxy(t, source, nil)
	inForce := Gate{APIKeys: []int16{keyFetch}, Mode: GateHold}
	if err := tp.SetGate(inForce); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		gate Gate
		want []string
	}{
		{"no keys", Gate{Mode: GateReject}, []string{"no API keys"}},
		{"Metadata is not gateable", Gate{APIKeys: []int16{keyProduce, keyMetadata}, Mode: GateReject}, []string{"API key 3", "Metadata"}},
		{"ApiVersions is not gateable", Gate{APIKeys: []int16{keyApiVersions}, Mode: GateHold}, []string{"API key 18"}},
		{"negative key", Gate{APIKeys: []int16{-1}, Mode: GateReject}, []string{"API key -1"}},
		{"unknown key", Gate{APIKeys: []int16{9999}, Mode: GateReject}, []string{"API key 9999"}},
		{"no mode", Gate{APIKeys: []int16{keyProduce}}, []string{"mode"}},
		{"invalid mode", Gate{APIKeys: []int16{keyProduce}, Mode: GateMode(7)}, []string{"mode GateMode(7)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tp.SetGate(tt.gate)
			if !errors.Is(err, ErrInvalidGate) {
				t.Fatalf("SetGate(%+v) = %v, want an error wrapping ErrInvalidGate", tt.gate, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if g := tp.Status().Gate; !slices.Equal(g.APIKeys, inForce.APIKeys) || g.Mode != inForce.Mode {
				t.Errorf("gate in force changed to %+v", g)
			}
		})
	}
}

// TestForbiddenAPIKeysAtStart: a gate in the configuration (what
// --forbidden-api-keys 0 sets) is a REJECT gate from the first request.
func TestForbiddenAPIKeysAtStart(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "forbidden")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) { c.Gate = Gate{APIKeys: []int16{keyProduce}, Mode: GateReject} })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if g := tp.Status().Gate; !slices.Equal(g.APIKeys, []int16{keyProduce}) || g.Mode != GateReject {
		t.Errorf("gate at start %+v, want REJECT [0]", g)
	}
	rc := dialWire(t, tp.Addr().String(), "raw")
	resp := rc.roundTrip(rawProduce(9, -1, topic, [16]byte{}, "x")).(*kmsg.ProduceResponse)
	if ec := resp.Topics[0].Partitions[0].ErrorCode; ec != kerr.NotEnoughReplicas.Code {
		t.Errorf("produce under --forbidden-api-keys 0: error %d, want NOT_ENOUGH_REPLICAS", ec)
	}
	// Everything else is served.
	cl := tp.client(t, retryFast())
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	p := startProducing(ctx, cl, topic, "v", 0, 5)
	eventually(t, 10*time.Second, "producer rejected", func() error {
		if gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Produce", "outcome", "reject") < 3 {
			return errNotYet
		}
		return nil
	})
	tp.ClearGate()
	if err := p.wait(ctx); err != nil {
		t.Fatalf("after the gate was cleared: %v", err)
	}
	waitRecordCount(ctx, t, source, topic, 5)
}

// --- helpers ---

// retryFast makes a franz-go client retry a rejected Produce quickly:
// franz-go refreshes metadata before retrying a partition error, no more
// often than MetadataMinAge (5 s by default).
func retryFast() kgo.Opt {
	return kgo.MetadataMinAge(50 * time.Millisecond)
}

func taggedValues(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, prefix+"-"+strconv.Itoa(i))
	}
	return out
}

// pendingProduce tracks records produced asynchronously.
type pendingProduce struct {
	n       int
	done    atomic.Int64
	firstEr atomic.Value // error
	all     chan struct{}
}

// startProducing produces prefix-i for i in [from, to) asynchronously, in order.
func startProducing(ctx context.Context, cl *kgo.Client, topic, prefix string, from, to int) *pendingProduce {
	p := &pendingProduce{n: to - from, all: make(chan struct{})}
	for i := from; i < to; i++ {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(prefix + "-" + strconv.Itoa(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				p.firstEr.CompareAndSwap(nil, err)
			}
			if p.done.Add(1) == int64(p.n) {
				close(p.all)
			}
		})
	}
	return p
}

// state returns how many records completed and the first error.
func (p *pendingProduce) state() (int64, error) {
	err, _ := p.firstEr.Load().(error)
	return p.done.Load(), err
}

func (p *pendingProduce) wait(ctx context.Context) error {
	select {
	case <-p.all:
	case <-ctx.Done():
		return fmt.Errorf("%d of %d records completed: %w", p.done.Load(), p.n, ctx.Err())
	}
	_, err := p.state()
	return err
}

// representativeRequest builds a request of the key at the version with two
// of everything: topics, partitions, groups, coordinator keys, transactions.
func representativeRequest(key, version int16) kmsg.Request {
	req := kmsg.RequestForKey(key)
	v := reflect.ValueOf(req).Elem()
	fillRepresentative(v, 0)
	req.SetVersion(version)
	if p, ok := req.(*kmsg.ProduceRequest); ok {
		p.Acks = -1
		p.TimeoutMillis = 5000
	}
	return req
}

var kmsgTagsType = reflect.TypeOf(kmsg.Tags{})

func fillRepresentative(v reflect.Value, idx int) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf, f := t.Field(i), v.Field(i)
		if !sf.IsExported() || sf.Type == kmsgTagsType || sf.Name == "Version" {
			continue
		}
		name := strings.ToLower(sf.Name)
		switch f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprintf("%s-%d", name, idx))
		case reflect.Pointer:
			if sf.Type.Elem().Kind() == reflect.String {
				s := fmt.Sprintf("%s-%d", name, idx)
				f.Set(reflect.ValueOf(&s))
			}
		case reflect.Int32:
			if sf.Name == "Partition" {
				f.SetInt(int64(idx))
			}
		case reflect.Array:
			if sf.Name == "TopicID" {
				var id [16]byte
				id[0], id[1] = 0xab, byte(idx+1)
				f.Set(reflect.ValueOf(id))
			}
		case reflect.Struct:
			fillRepresentative(f, idx)
		case reflect.Slice:
			et := sf.Type.Elem()
			switch et.Kind() {
			case reflect.Struct:
				s := reflect.MakeSlice(sf.Type, 2, 2)
				for j := range 2 {
					e := s.Index(j)
					if d, ok := e.Addr().Interface().(interface{ Default() }); ok {
						d.Default()
					}
					fillRepresentative(e, j)
				}
				f.Set(s)
			case reflect.String:
				f.Set(reflect.ValueOf([]string{name + "-0", name + "-1"}))
			case reflect.Int32:
				if sf.Name == "Partitions" {
					f.Set(reflect.ValueOf([]int32{0, 1}))
				}
			}
		}
	}
}

// partitionKeys lists "topic|id/partition" for every partition a message
// names (forgotten fetch topics aside), sorted.
func partitionKeys(v reflect.Value) []string {
	var out []string
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Struct {
				for i := 0; i < v.Len(); i++ {
					walk(v.Index(i))
				}
			}
		case reflect.Struct:
			parts, topic, id := v.FieldByName("Partitions"), v.FieldByName("Topic"), v.FieldByName("TopicID")
			if parts.IsValid() && parts.Kind() == reflect.Slice && (topic.IsValid() || id.IsValid()) {
				name := ""
				if topic.IsValid() {
					if topic.Kind() == reflect.Pointer && !topic.IsNil() {
						name = topic.Elem().String()
					} else if topic.Kind() == reflect.String {
						name = topic.String()
					}
				}
				idHex := ""
				if id.IsValid() {
					idHex = fmt.Sprintf("%x", id.Interface())
				}
				for i := 0; i < parts.Len(); i++ {
					p := parts.Index(i)
					if p.Kind() == reflect.Struct {
						p = p.FieldByName("Partition")
					}
					out = append(out, fmt.Sprintf("%s|%s/%d", name, idHex, p.Int()))
				}
				return
			}
			for i := 0; i < v.NumField(); i++ {
				sf := v.Type().Field(i)
				if sf.IsExported() && sf.Type != kmsgTagsType && sf.Name != "ForgottenTopics" {
					walk(v.Field(i))
				}
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out
}

// checkErrorCodes asserts that every ErrorCode field the response carries on
// the wire at its version holds code (Fetch's top-level session error code:
// NONE), and that at least one does. A field is on the wire if changing it
// changes the encoding.
func checkErrorCodes(t *testing.T, key int16, resp kmsg.Response, code int16) {
	t.Helper()
	type field struct {
		path string
		v    reflect.Value
	}
	var fields []field
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), path)
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Struct {
				for i := 0; i < v.Len(); i++ {
					walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
				}
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				sf := v.Type().Field(i)
				if !sf.IsExported() || sf.Type == kmsgTagsType {
					continue
				}
				p := strings.TrimPrefix(path+"."+sf.Name, ".")
				if sf.Name == "ErrorCode" && sf.Type.Kind() == reflect.Int16 {
					fields = append(fields, field{p, v.Field(i)})
					continue
				}
				walk(v.Field(i), p)
			}
		}
	}
	walk(reflect.ValueOf(resp), "")
	orig := resp.AppendTo(nil)
	carried := 0
	for _, f := range fields {
		old := f.v.Int()
		f.v.SetInt(old ^ 0x1234)
		onWire := !bytes.Equal(resp.AppendTo(nil), orig)
		f.v.SetInt(old)
		if !onWire {
			continue
		}
		want := code
		if key == keyFetch && f.path == "ErrorCode" {
			want = 0
		}
		if int16(old) != want {
			t.Errorf("%s = %d (%v), want %d (%v)", f.path, old, kerr.ErrorForCode(int16(old)), want, kerr.ErrorForCode(want))
		}
		if int16(old) == code {
			carried++
		}
	}
	if carried == 0 {
		t.Errorf("no error code on the wire carries %v: a client would take the answer as success", kerr.ErrorForCode(code))
	}
}

// checkEmptyFetch checks a refused Fetch's answer: no error anywhere, no
// records, and each partition's position presented as its end.
func checkEmptyFetch(t *testing.T, req *kmsg.FetchRequest, resp *kmsg.FetchResponse) {
	t.Helper()
	if resp.ErrorCode != 0 {
		t.Errorf("top-level error %v, want none", kerr.ErrorForCode(resp.ErrorCode))
	}
	offsets := map[int32]int64{}
	for _, rt := range req.Topics {
		for _, p := range rt.Partitions {
			offsets[p.Partition] = p.FetchOffset
		}
	}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if p.RecordBatches == nil {
				t.Errorf("partition %d: null record set; librdkafka 2.0 fails the whole response on it", p.Partition)
			}
			if p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
				t.Errorf("partition %d: error %v, %d bytes of records; want an empty answer", p.Partition, kerr.ErrorForCode(p.ErrorCode), len(p.RecordBatches))
			}
			lso := p.LastStableOffset
			if resp.Version < 4 { // no last stable offset before v4
				lso = offsets[p.Partition]
			}
			if want := offsets[p.Partition]; p.HighWatermark != want || lso != want {
				t.Errorf("partition %d: high watermark %d, last stable offset %d; want the fetch offset %d", p.Partition, p.HighWatermark, p.LastStableOffset, want)
			}
		}
	}
}

// TestGateRefusedFetchIsEmptyLongPoll: under a REJECT gate on Fetch, a
// Fetch is answered as a broker with nothing to return answers it — no
// error, no records, after its MaxWait — and the answer comes at once when
// the gate lifts. An error here made kafkajs rejoin its group from every
// fetcher at once after a switch, each join with a member id of its own,
// and the group wait 30s and more for the members nobody heartbeat for
// (docs/COMPATIBILITY.md, kafkajs).
func TestGateRefusedFetchIsEmptyLongPoll(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "emptyfetch")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil)
	if err := tp.SetGate(Gate{APIKeys: []int16{keyFetch}, Mode: GateReject}); err != nil {
		t.Fatal(err)
	}
	rc := dialWire(t, tp.Addr().String(), "empty-fetch")
	fetch := func(maxWait int32) *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.ReplicaID, req.MaxWaitMillis, req.MaxBytes = 11, -1, maxWait, 1<<20
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = 0, 42, 1<<20, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return req
	}
	req := fetch(200)
	start := time.Now()
	resp := rc.roundTrip(req).(*kmsg.FetchResponse)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("answered after %v, want no sooner than its MaxWait (200ms): a client would spin on empty answers", took)
	}
	checkEmptyFetch(t, req, resp)

	// A long MaxWait: the answer waits for the gate to lift, not for the
	// MaxWait, nor for longer than refusedFetchWait.
	rejects := func() float64 {
		return gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "Fetch", "outcome", "reject")
	}
	before := rejects()
	req = fetch(60000)
	corr := rc.send(req)
	eventually(t, 10*time.Second, "the second fetch refused", func() error {
		if rejects() == before {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	tp.ClearGate()
	start = time.Now()
	resp = rc.recv(req, corr).(*kmsg.FetchResponse)
	if took := time.Since(start); took > refusedFetchWait {
		t.Errorf("answered %v after the gate lifted, want at once", took)
	}
	checkEmptyFetch(t, req, resp)
}
