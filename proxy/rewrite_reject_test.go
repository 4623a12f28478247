package proxy

import (
	"bytes"
	"fmt"
	"net"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// errorCodes returns every ErrorCode in a decoded message, split into those
// of partition-level structs (with a Partition field) and the others.
func errorCodes(v reflect.Value) (partition, other []int16) {
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Struct:
			if v.Type() == tagsType {
				return
			}
			_, isPartition := v.Type().FieldByName("Partition")
			for i := 0; i < v.NumField(); i++ {
				sf := v.Type().Field(i)
				if sf.Name == "ErrorCode" && sf.Type.Kind() == reflect.Int16 {
					if isPartition {
						partition = append(partition, int16(v.Field(i).Int()))
					} else {
						other = append(other, int16(v.Field(i).Int()))
					}
					continue
				}
				if sf.IsExported() {
					walk(v.Field(i))
				}
			}
		}
	}
	walk(v)
	return partition, other
}

// TestRewriteRejectEveryVersion: for every gateable key and every version,
// the answer a REJECT gate makes decodes, and carries the gate's retriable
// error where the client reads it — on every partition it names, or at the
// top level — so the client backs off and retries instead of taking an
// empty answer as success.
func TestRewriteRejectEveryVersion(t *testing.T) {
	n := 0
	for _, key := range fuzzGateKeys() {
		maxV := kmsg.RequestForKey(key).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			n++
			t.Run(fmt.Sprintf("%s/v%d", apiName(key), v), func(t *testing.T) {
				req := kmsg.RequestForKey(key)
				newFiller(int64(key)<<16|int64(v)).fillMessage(req, v)
				hdr := requestHeader{Key: key, Version: v, CorrID: 77, Known: true, Flexible: req.IsFlexible()}
				out, err := rejectResponse(hdr, req.AppendTo(nil))
				if err != nil {
					t.Fatalf("rejectResponse: %v", err)
				}
				hl, err := responseHeaderLen(key, v, out)
				if err != nil {
					t.Fatal(err)
				}
				resp := kmsg.ResponseForKey(key)
				resp.SetVersion(v)
				if err := resp.ReadFrom(out[hl:]); err != nil {
					t.Fatalf("reject response does not decode: %v", err)
				}
				if key == keyFetch {
					// A refused Fetch is an empty answer, no error.
					checkEmptyFetch(t, req.(*kmsg.FetchRequest), resp.(*kmsg.FetchResponse))
					return
				}
				code := gateErrors[key]
				parts, others := errorCodes(reflect.ValueOf(resp).Elem())
				for _, c := range parts {
					if c != code {
						t.Errorf("a partition carries error %d, want %d", c, code)
					}
				}
				found := len(parts) > 0
				for _, c := range others {
					found = found || c == code
				}
				if !found {
					t.Errorf("the response carries no error at v%d (partition codes %v, others %v): the client takes the rejected request as answered", v, parts, others)
				}
			})
		}
	}
	t.Logf("walked %d request versions over %d gateable keys", n, len(fuzzGateKeys()))
}

// TestRewriteNoLeakWhenListenerFails: when a virtual broker's listener
// cannot be bound (its port is taken), the response naming that broker
// must not reach the client with the upstream broker's own address — the
// client would dial the cluster directly, around the proxy.
func TestRewriteNoLeakWhenListenerFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = busy.Addr().(*net.TCPAddr).Port // virtual broker 0's port is taken
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	resp := kmsg.NewPtrMetadataResponse()
	resp.Version = 12
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = 1, upstreamHostPrefix+"1.example", upstreamPortBase+1
	resp.Brokers = append(resp.Brokers, b)
	hdr := requestHeader{Key: keyMetadata, Version: 12, CorrID: 1, Known: true, Flexible: true}
	out, err := rewriteResponseFor(p, p.active, hdr, responseFrame(keyMetadata, 12, 1, resp.AppendTo(nil)))
	if err == nil && bytes.Contains(out, []byte(upstreamHostPrefix)) {
		t.Errorf("virtual broker 0 has no listener and the client is sent the upstream address %s:%d", b.Host, b.Port)
	}
}
