package proxy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// fetchWithTag is a Fetch response body (v12+) of one topic and one
// partition whose partition tag section holds one tag of the given id and
// size (zero bytes of content): what a broker decides, or anyone in the
// middle of a plaintext connection.
func fetchWithTag(version int16, tag, size uint32) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(version)
	t := kmsg.NewFetchResponseTopic()
	t.Topic, t.TopicID = "topic-0", testTopicIDs()[0]
	t.Partitions = append(t.Partitions, kmsg.NewFetchResponseTopicPartition())
	resp.Topics = append(resp.Topics, t)
	b := resp.AppendTo(nil)
	// The body ends with the partition's empty tag section, the topic's
	// and the response's: replace the first of the three.
	out := append([]byte(nil), b[:len(b)-3]...)
	out = kbin.AppendUvarint(out, 1)
	out = kbin.AppendUvarint(out, tag)
	out = kbin.AppendUvarint(out, size)
	out = append(out, make([]byte, size)...)
	return append(out, 0, 0)
}

// TestFetchFastPathShortTags: a Fetch response whose CurrentLeader or
// DivergingEpoch tag is shorter than its fields made the fast path patch
// past the frame — an index out of range that killed the whole process
// (issue 14). It is now refused: that one connection closes.
func TestFetchFastPathShortTags(t *testing.T) {
	p, u := newOfflineProxy(t)
	for _, tc := range []struct {
		name      string
		tag, size uint32
	}{
		{"CurrentLeader of 0 bytes", 1, 0},
		{"CurrentLeader of 7 bytes", 1, 7},
		{"DivergingEpoch of 0 bytes", 0, 0},
		{"DivergingEpoch of 11 bytes", 0, 11},
	} {
		for _, version := range []int16{12, 13, 16, 18} {
			body := fetchWithTag(version, tc.tag, tc.size)
			hdr := requestHeader{Key: keyFetch, Version: version, CorrID: 5, Known: true, Flexible: true}
			frame := responseFrame(keyFetch, version, hdr.CorrID, body)
			if _, err := rewriteResponseFor(p, u, hdr, frame); err == nil {
				t.Errorf("%s, Fetch v%d: rewritten without an error", tc.name, version)
			}
		}
	}
	// The same tags at their full size pass.
	for _, tc := range []struct{ tag, size uint32 }{{1, 9}, {0, 13}} {
		body := fetchWithTag(16, tc.tag, tc.size)
		hdr := requestHeader{Key: keyFetch, Version: 16, CorrID: 5, Known: true, Flexible: true}
		if _, err := rewriteResponseFor(p, u, hdr, responseFrame(keyFetch, 16, hdr.CorrID, body)); err != nil {
			t.Errorf("tag %d of %d bytes: %v", tc.tag, tc.size, err)
		}
	}
}

// TestPanicClosesOneConnection: a panic in a connection's goroutine (a bug
// the walk and the bounds checks missed) is recovered there, logged and
// counted as a fault with reason "panic", instead of ending the process.
func TestPanicClosesOneConnection(t *testing.T) {
	p, _ := newOfflineProxy(t)
	c := &clientConn{p: p, log: p.log}
	err := func() (err error) {
		defer c.recoverFault(&err)
		var frame []byte
		_ = frame[3] // what a missed bounds check does
		return nil
	}()
	var fe *connFault
	if !errors.As(err, &fe) || fe.reason != "panic" {
		t.Fatalf("got %v, want a fault with reason panic", err)
	}
	if !strings.Contains(err.Error(), "index out of range") {
		t.Errorf("error %q does not carry the panic", err)
	}
}

// TestVirtualBrokerCap: every node id in a response makes a virtual broker
// with its own listener; a cluster naming ids without end (a broker gone
// wrong, or anyone in the middle of a plaintext connection) must not make
// the proxy bind listeners without end. Ids past MaxVirtualBrokers are
// presented as -1.
func TestVirtualBrokerCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	cfg.MaxVirtualBrokers = 4
	reg := prometheus.NewRegistry()
	p, err := New(cfg, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(12)
	for id := int32(100); id < 110; id++ {
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = id, "10.0.0.1", 9092+id
		resp.Brokers = append(resp.Brokers, b)
	}
	hdr := requestHeader{Key: keyMetadata, Version: 12, CorrID: 9, Known: true, Flexible: true}
	out, err := rewriteResponseFor(p, p.active, hdr, responseFrame(keyMetadata, 12, hdr.CorrID, resp.AppendTo(nil)))
	if err != nil {
		t.Fatal(err)
	}
	got := kmsg.NewPtrMetadataResponse()
	got.SetVersion(12)
	if err := got.ReadFrom(out[5:]); err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, b := range got.Brokers {
		ids = append(ids, b.NodeID)
	}
	if want := []int32{0, 1, 2, 3, -1, -1, -1, -1, -1, -1}; !slices.Equal(ids, want) {
		t.Fatalf("presented node ids %v, want %v", ids, want)
	}
	p.mu.Lock()
	listeners := 0
	for _, vb := range p.vbrokers {
		if vb != nil && vb.ln != nil {
			listeners++
		}
	}
	p.mu.Unlock()
	if listeners != 4 {
		t.Errorf("%d virtual broker listeners, want 4", listeners)
	}
	if n := gatheredValue(t, reg, "switchyard_proxy_virtual_brokers_refused_total"); n != 6 {
		t.Errorf("virtual_brokers_refused_total %v, want 6", n)
	}
}
