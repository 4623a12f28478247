package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// Bad input from a client or a broker closes that one connection, counts it
// under connection_errors_total{reason}, and leaves every other connection
// of the proxy serving (invariant 6). Each case below also runs a healthy
// franz-go producer and consumer through the same proxy before and after the
// fault; their connections must never be closed.

// TestBadInputClosesOneConnection sends malformed bytes on raw connections to
// a proxy in front of kfake.
func TestBadInputClosesOneConnection(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "badinput")
	source.CreateTopic(t, topic, 3)
	const maxFrame = 1 << 20
	tp := startProxy(t, source, nil, func(c *Config) { c.MaxFrameBytes = maxFrame })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	live := newBystanders(t, tp, topic)
	live.check(ctx, t, "before")

	// A fixed seed keeps the garbage case deterministic; its first four
	// bytes, read as a size, are far outside [0, maxFrame].
	garbage := make([]byte, 512)
	rng := rand.New(rand.NewPCG(0x5157, 0xa4d))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	if n := int32(binary.BigEndian.Uint32(garbage)); n >= 0 && n <= maxFrame {
		t.Fatalf("garbage seed yields an in-range size %d; choose another seed", n)
	}

	metadataV99 := func() []byte {
		// A Metadata body as v12 encodes it, under a v99 header (flexible,
		// as the broker would read it); the proxy forwards it blind.
		req := kmsg.NewPtrMetadataRequest()
		req.Version = 12
		body := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, 41)
		binary.BigEndian.PutUint16(body[6:], 99)
		return body
	}()

	// hostileTags is a request whose tag section declares 2^32-1 tagged
	// fields in a few bytes: kmsg v1.15 loops over the count without
	// checking that bytes remain (a minute of CPU, issue 14); the proxy
	// must refuse it before decoding.
	hostileTags := func(key, version int16, body []byte) []byte {
		frame := kbin.AppendInt16(nil, key)
		frame = kbin.AppendInt16(frame, version)
		frame = kbin.AppendInt32(frame, 43)
		frame = kbin.AppendNullableString(frame, kmsg.StringPtr("raw"))
		frame = append(frame, 0) // header tags
		frame = append(frame, body...)
		frame = kbin.AppendUvarint(frame, 0xFFFF_FFFF)
		return append(sizePrefix(uint32(len(frame))), frame...)
	}

	tests := []struct {
		name string
		// send writes the bad input; closeAfter closes our side right after.
		send       []byte
		closeAfter bool
		// reason is the connection_errors_total reason expected; empty for
		// input the proxy answers without a fault.
		reason string
		// noHugeAlloc asserts the proxy did not allocate the announced size.
		noHugeAlloc bool
		check       func(t *testing.T, rc *wireConn)
	}{
		{
			name:       "truncated frame",
			send:       append(sizePrefix(100), make([]byte, 10)...),
			closeAfter: true,
			reason:     "client_read",
		},
		{
			name:        "size prefix of 1 GiB over MaxFrameBytes",
			send:        append(sizePrefix(1<<30), make([]byte, 64)...),
			reason:      "frame_too_large",
			noHugeAlloc: true,
		},
		{
			name:   "size prefix one byte over MaxFrameBytes",
			send:   append(sizePrefix(maxFrame+1), make([]byte, 64)...),
			reason: "frame_too_large",
		},
		{
			// Counted with oversized frames: as an unsigned size it is one.
			name:   "negative size prefix",
			send:   append(sizePrefix(uint32(0xfffffff0)), make([]byte, 16)...),
			reason: "frame_too_large",
		},
		{
			name:   "random garbage",
			send:   garbage,
			reason: "frame_too_large",
		},
		{
			name:   "header shorter than key, version, correlation id and client id length",
			send:   append(sizePrefix(6), 0, 3, 0, 1, 0, 0),
			reason: "bad_header",
		},
		{
			name:   "client id longer than the frame",
			send:   append(sizePrefix(12), 0, 3, 0, 1, 0, 0, 0, 7, 0x01, 0xf4, 'a', 'b'),
			reason: "bad_header",
		},
		{
			name:   "negative request version",
			send:   append(sizePrefix(10), 0, 3, 0xff, 0xff, 0, 0, 0, 7, 0xff, 0xff),
			reason: "bad_header",
		},
		{
			// Metadata v12: null topics, auto create, authorized ops; the
			// request's own tag section is the hostile count.
			name:   "Metadata v12 declaring 2^32-1 tagged fields",
			send:   hostileTags(3, 12, []byte{0, 1, 0}),
			reason: "malformed_request",
		},
		{
			// Heartbeat v4: group "g", generation, member "m", no instance
			// id; decoded by the proxy after a switch (stale members).
			name:   "Heartbeat v4 declaring 2^32-1 tagged fields",
			send:   hostileTags(12, 4, []byte{2, 'g', 0, 0, 0, 1, 2, 'm', 0}),
			reason: "malformed_request",
		},
		{
			// Fetch v12 (no topics) with a top-level tag 1: ReplicaState,
			// which Kafka defines from v15 on but kmsg decodes at any
			// flexible version; inside, a tag count of 2^32-1. Found by
			// review: the walk skipped the tag and kmsg spun on it. The
			// walk now walks it as kmsg reads it and refuses the count.
			name: "Fetch v12 with a stray ReplicaState declaring 2^32-1 tagged fields",
			send: func() []byte {
				req := kmsg.NewPtrFetchRequest()
				req.SetVersion(12)
				req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 10, 1, 1<<20
				body := req.AppendTo(nil)
				inner := kbin.AppendUvarint(make([]byte, 12), 0xFFFF_FFFF)
				body = append(body[:len(body)-1], 1, 1, byte(len(inner)))
				body = append(body, inner...)
				frame := kbin.AppendInt16(nil, 1)
				frame = kbin.AppendInt16(frame, 12)
				frame = kbin.AppendInt32(frame, 45)
				frame = kbin.AppendNullableString(frame, kmsg.StringPtr("raw"))
				frame = append(append(frame, 0), body...)
				return append(sizePrefix(uint32(len(frame))), frame...)
			}(),
			reason: "malformed_request",
		},
		{
			name:   "Metadata v4 with more topics than the frame holds",
			send:   append(sizePrefix(19), 0, 3, 0, 4, 0, 0, 0, 44, 0, 3, 'r', 'a', 'w', 0x7f, 0xff, 0xff, 0xff, 1, 0),
			reason: "malformed_request",
		},
		{
			// Unknown versions are forwarded as bytes. A Kafka broker closes
			// the connection on a version it does not support (kfake does
			// too), which ends this one client connection.
			name:   "unknown version of a known key (Metadata v99)",
			send:   metadataV99,
			reason: "upstream_closed",
		},
		{
			// KIP-511: the proxy answers an ApiVersions version it does not
			// know with UNSUPPORTED_VERSION and a v0 body naming the range
			// it supports, and the connection stays usable.
			name: "ApiVersions v99",
			send: func() []byte {
				req := kmsg.NewPtrApiVersionsRequest()
				req.Version = 3
				b := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, 42)
				binary.BigEndian.PutUint16(b[6:], 99)
				return b
			}(),
			check: func(t *testing.T, rc *wireConn) {
				frame := rc.readFrame()
				if got := int32(binary.BigEndian.Uint32(frame)); got != 42 {
					t.Fatalf("correlation id %d, want 42", got)
				}
				resp := kmsg.NewPtrApiVersionsResponse()
				resp.Version = 0
				if err := resp.ReadFrom(frame[4:]); err != nil {
					t.Fatalf("decode v0 ApiVersions body (header v0: no tags): %v", err)
				}
				if resp.ErrorCode != kerr.UnsupportedVersion.Code {
					t.Errorf("error code %d, want UNSUPPORTED_VERSION (%d)", resp.ErrorCode, kerr.UnsupportedVersion.Code)
				}
				maxV := kmsg.NewPtrApiVersionsRequest().MaxVersion()
				if len(resp.ApiKeys) != 1 || resp.ApiKeys[0].ApiKey != 18 ||
					resp.ApiKeys[0].MinVersion != 0 || resp.ApiKeys[0].MaxVersion != maxV {
					t.Errorf("api keys %+v, want only ApiVersions (18) v0-%d", resp.ApiKeys, maxV)
				}
				// The client retries with a version the proxy named.
				req := kmsg.NewPtrApiVersionsRequest()
				req.Version = maxV
				got := rc.roundTrip(req).(*kmsg.ApiVersionsResponse)
				if got.ErrorCode != 0 || len(got.ApiKeys) == 0 {
					t.Errorf("ApiVersions v%d after the retry: error %d, %d keys", maxV, got.ErrorCode, len(got.ApiKeys))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := connErrorsByReason(t, tp.reg)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			allocBefore := ms.TotalAlloc

			rc := dialWire(t, tp.Addr().String(), "raw")
			rc.write(tt.send)
			if tt.closeAfter {
				rc.nc.Close()
			}
			if tt.check != nil {
				tt.check(t, rc)
			}
			if tt.reason != "" {
				if !tt.closeAfter {
					rc.expectClosed()
				}
				waitOneConnError(t, tp.reg, before, tt.reason)
			} else {
				// Still open and answering: one more round trip.
				req := kmsg.NewPtrApiVersionsRequest()
				rc.roundTrip(req)
				assertNoConnErrorsSince(t, tp.reg, before)
			}
			if tt.noHugeAlloc {
				runtime.ReadMemStats(&ms)
				if d := ms.TotalAlloc - allocBefore; d > 256<<20 {
					t.Errorf("%d MiB allocated while refusing a 1 GiB frame", d>>20)
				}
			}
			live.check(ctx, t, tt.name)
		})
	}
	live.assertNoDisconnects(t)
}

// TestUnknownAPIKeyPassesThrough: a key the proxy does not know is forwarded
// byte for byte. A Kafka broker closes the connection on an unknown key, so
// the client connection ends with upstream_closed and nothing else does.
//
// The upstream is a relay in front of kfake because kfake itself dies on an
// unknown key (nil request from kmsg.RequestForKey, a panic that takes the
// whole test process down); the relay does what a broker does and closes.
func TestUnknownAPIKeyPassesThrough(t *testing.T) {
	backend := kafkatest.NewFake(t, "relayed", 1)
	topic := kafkatest.Topic(t, "unknownkey")
	backend.CreateTopic(t, topic, 1)
	relay := newFaultyRelay(t, backend, nil)
	tp := startProxy(t, relay.cluster("source"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := newBystanders(t, tp, topic)
	live.check(ctx, t, "before")
	before := connErrorsByReason(t, tp.reg)

	payload := []byte{0x27, 0x0f, 0, 0, 0, 0, 0, 9, 0, 3, 'r', 'a', 'w', 'h', 'e', 'l', 'l', 'o'} // key 9999 v0, corr 9, client "raw", body "hello"
	rc := dialWire(t, tp.Addr().String(), "raw")
	rc.write(append(sizePrefix(uint32(len(payload))), payload...))
	select {
	case got := <-relay.unknown:
		if !bytes.Equal(got, payload) {
			t.Errorf("upstream received %x, want the client's frame %x unchanged", got, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the unknown key never reached the upstream")
	}
	rc.expectClosed()
	waitOneConnError(t, tp.reg, before, "upstream_closed")
	live.check(ctx, t, "after")
	live.assertNoDisconnects(t)
}

// TestUpstreamClosesMidResponse: the broker writes half of a Produce or Fetch
// response and closes. The proxy never forwards a partial frame: it closes
// that client connection (upstream_closed) and serves the others.
func TestUpstreamClosesMidResponse(t *testing.T) {
	backend := kafkatest.NewFake(t, "relayed", 1)
	topic := kafkatest.Topic(t, "halfresp")
	backend.CreateTopic(t, topic, 1)
	relay := newFaultyRelay(t, backend, func(key, _ int16, clientID string) faultAction {
		if clientID == "half" && (key == 0 || key == 1) {
			return faultHalfResponse
		}
		return faultNone
	})
	tp := startProxy(t, relay.cluster("source"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := newBystanders(t, tp, topic)
	live.check(ctx, t, "before")

	tests := []struct {
		name string
		req  kmsg.Request
	}{
		{"produce", rawProduce(7, -1, topic, [16]byte{}, "half-1", "half-2")},
		{"fetch", func() kmsg.Request {
			req := kmsg.NewPtrFetchRequest()
			req.Version = 11
			req.MaxWaitMillis = 10
			req.MaxBytes = 1 << 20
			req.ReplicaID = -1
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = topic
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.PartitionMaxBytes = 1 << 20
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			return req
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := connErrorsByReason(t, tp.reg)
			rc := dialWire(t, tp.Addr().String(), "half")
			rc.send(tt.req)
			rc.expectClosed()
			waitOneConnError(t, tp.reg, before, "upstream_closed")
			live.check(ctx, t, tt.name)
		})
	}
	if n := relay.halves.Load(); n != int64(len(tests)) {
		t.Errorf("relay cut %d responses, want %d", n, len(tests))
	}
	live.assertNoDisconnects(t)
}

// TestSwitchRefusals: a switch that cannot happen changes nothing and says why.
func TestSwitchRefusals(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "refusals")
	source.CreateTopic(t, topic, 3)
	dead := refusedAddr(t)
	tp := startProxy(t, source, nil, func(c *Config) {
		c.Clusters = append(c.Clusters, ClusterConfig{Name: "dead", Bootstrap: []string{dead}})
		c.DialTimeout = 2 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := newBystanders(t, tp, topic)
	live.check(ctx, t, "before")

	tests := []struct {
		name     string
		to       string
		want     error
		wantText string
	}{
		{name: "unknown cluster", to: "nowhere", want: ErrUnknownCluster, wantText: `"nowhere"`},
		{name: "unreachable cluster", to: "dead", want: ErrUnreachable, wantText: "dead"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := connErrorsByReason(t, tp.reg)
			rep, err := tp.Switch(ctx, tt.to)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Switch(%q) = %+v, %v; want an error wrapping %v", tt.to, rep, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name %s", err, tt.wantText)
			}
			st := tp.Status()
			if st.ActiveCluster != "source" || st.Switching || st.Switches != 0 {
				t.Errorf("after a refused switch: active %s, switching %v, switches %d; want source, false, 0",
					st.ActiveCluster, st.Switching, st.Switches)
			}
			if err := tp.Ready(); err != nil {
				t.Errorf("Ready after a refused switch: %v", err)
			}
			live.check(ctx, t, tt.name)
			assertNoConnErrorsSince(t, tp.reg, before)
		})
	}
	for _, c := range tp.Status().Clusters {
		if c.Name == "dead" && !strings.Contains(c.LastError, ErrUnreachable.Error()) {
			t.Errorf("status of cluster dead: last error %q, want it to say %q", c.LastError, ErrUnreachable)
		}
	}
	live.assertNoDisconnects(t)
}

// TestReadyNamesUnreachableActiveCluster: with the active cluster's bootstrap
// refusing connections, Ready keeps failing and says which cluster and why.
func TestReadyNamesUnreachableActiveCluster(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.DialTimeout = time.Second
	cfg.Clusters = []ClusterConfig{
		{Name: "source", Bootstrap: source.Bootstrap},
		{Name: "dead", Bootstrap: []string{refusedAddr(t)}},
	}
	cfg.Active = "dead"
	p := runProxy(t, cfg, prometheus.NewRegistry(), zap.ErrorLevel)
	var last error
	eventually(t, 15*time.Second, "Ready to report the cluster's error", func() error {
		last = p.Ready()
		if last == nil {
			t.Fatal("Ready() = nil with the active cluster unreachable")
		}
		if !strings.Contains(last.Error(), ErrUnreachable.Error()) {
			return last
		}
		return nil
	})
	if !strings.Contains(last.Error(), "dead") {
		t.Errorf("Ready() = %q, want it to name cluster dead", last)
	}
}

// TestConcurrentSwitchesOneWins: while a switch drains, a second one fails at
// once with ErrSwitchInProgress, whatever its target. The first is held in
// its drain by a Produce whose response the upstream relay withholds until
// the test releases it, so the overlap is certain, not timed.
func TestConcurrentSwitchesOneWins(t *testing.T) {
	backend := kafkatest.NewFake(t, "relayed", 1)
	target := kafkatest.NewFake(t, "target", 2)
	topic := kafkatest.Topic(t, "concurrent")
	backend.CreateTopic(t, topic, 1)
	target.CreateTopic(t, topic, 1)
	relay := newFaultyRelay(t, backend, func(key, _ int16, clientID string) faultAction {
		if clientID == "hold" && key == 0 {
			return faultHoldResponse
		}
		return faultNone
	})
	tp := startProxy(t, relay.cluster("source"), target)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := connErrorsByReason(t, tp.reg)

	rc := dialWire(t, tp.Addr().String(), "hold")
	corr := rc.send(rawProduce(7, -1, topic, [16]byte{}, "held"))
	relay.waitHeld(t)

	type result struct {
		rep SwitchReport
		err error
	}
	first := make(chan result, 1)
	go func() {
		rep, err := tp.Switch(ctx, "target")
		first <- result{rep, err}
	}()
	eventually(t, 10*time.Second, "first switch draining", func() error {
		if !tp.Status().Switching {
			return errNotYet
		}
		return nil
	})
	for _, to := range []string{"target", "source"} {
		if _, err := tp.Switch(ctx, to); !errors.Is(err, ErrSwitchInProgress) {
			t.Errorf("second Switch(%q) while the first drains: %v, want ErrSwitchInProgress", to, err)
		}
	}
	relay.releaseHeld()
	r := <-first
	if r.err != nil {
		t.Fatalf("first switch: %v", r.err)
	}
	if r.rep.From != "source" || r.rep.To != "target" || r.rep.Drained != 1 || r.rep.ConnectionsClosed != 0 {
		t.Errorf("first switch report %+v: want source→target, 1 drained, no connection closed", r.rep)
	}
	resp := rc.recv(rawProduce(7, -1, topic, [16]byte{}), corr).(*kmsg.ProduceResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Errorf("held produce answered with %+v, want success from the source", resp.Topics)
	}
	if st := tp.Status(); st.ActiveCluster != "target" || st.Switches != 1 {
		t.Errorf("after the switch: active %s, %d switches; want target, 1", st.ActiveCluster, st.Switches)
	}
	assertNoConnErrorsSince(t, tp.reg, before)
}

// TestSwitchParkedRequestOutlivesHoldBudget: a switch parks every request
// while it drains. A request of an API that has no retriable error answer
// (Metadata) parked longer than HoldBudget must still be answered once the
// switch is applied; the connection must not be closed, since the switch
// closes only connections with requests in flight past its drain deadline.
func TestSwitchParkedRequestOutlivesHoldBudget(t *testing.T) {
	backend := kafkatest.NewFake(t, "relayed", 1)
	target := kafkatest.NewFake(t, "target", 2)
	topic := kafkatest.Topic(t, "parked")
	backend.CreateTopic(t, topic, 1)
	target.CreateTopic(t, topic, 1)
	relay := newFaultyRelay(t, backend, func(key, _ int16, clientID string) faultAction {
		if clientID == "hold" && key == 0 {
			return faultHoldResponse
		}
		return faultNone
	})
	tp := startProxy(t, relay.cluster("source"), target, func(c *Config) { c.HoldBudget = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := connErrorsByReason(t, tp.reg)

	holder := dialWire(t, tp.Addr().String(), "hold")
	holder.send(rawProduce(7, -1, topic, [16]byte{}, "held"))
	relay.waitHeld(t)
	done := make(chan error, 1)
	go func() {
		_, err := tp.Switch(ctx, "target")
		done <- err
	}()
	eventually(t, 10*time.Second, "switch draining", func() error {
		if !tp.Status().Switching {
			return errNotYet
		}
		return nil
	})

	rc := dialWire(t, tp.Addr().String(), "metadata")
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	corr := rc.send(md)
	eventually(t, 10*time.Second, "metadata parked by the switch", func() error {
		if tp.Status().Held < 1 {
			return errNotYet
		}
		return nil
	})
	// The proxy's own clock says when the budget has passed: a Produce
	// parked after the Metadata request is answered with its retriable
	// error once HoldBudget has run out for it, so also for the Metadata.
	clock := dialWire(t, tp.Addr().String(), "clock")
	pr := clock.roundTrip(rawProduce(7, -1, topic, [16]byte{}, "clock")).(*kmsg.ProduceResponse)
	if ec := pr.Topics[0].Partitions[0].ErrorCode; ec != kerr.NotEnoughReplicas.Code {
		t.Fatalf("produce parked past the hold budget: error %d, want NOT_ENOUGH_REPLICAS", ec)
	}
	relay.releaseHeld()
	if err := <-done; err != nil {
		t.Fatalf("switch: %v", err)
	}
	frame, err := rc.tryReadFrame()
	if err != nil {
		t.Fatalf("Metadata request parked by the switch: connection closed (%v) instead of answered; connection errors %v",
			err, countDelta(before, connErrorsByReason(t, tp.reg)))
	}
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		t.Errorf("correlation id %d, want %d", got, corr)
	}
	assertNoConnErrorsSince(t, tp.reg, before)
}

// TestAcksZeroProduce: an acks=0 Produce gets no response, so the proxy must
// not wait for one; every record arrives, and later requests on the same
// connection are answered in order.
func TestAcksZeroProduce(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "acks0")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := connErrorsByReason(t, tp.reg)

	const n = 500
	disc := &brokerDisconnects{}
	producer := tp.client(t, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(), kgo.WithHooks(disc))
	produceTagged(ctx, t, producer, topic, "a", 0, n)
	waitRecordCount(ctx, t, source, topic, n)
	// The producer's connections still work: a request that is answered.
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, producer); err != nil {
		t.Fatalf("metadata after acks=0 produce: %v", err)
	}
	produceTagged(ctx, t, producer, topic, "a", n, 2*n)
	waitRecordCount(ctx, t, source, topic, 2*n)

	t.Run("raw connection", func(t *testing.T) {
		rc := dialWire(t, tp.Addr().String(), "raw")
		vs := rc.roundTrip(kmsg.NewPtrApiVersionsRequest()).(*kmsg.ApiVersionsResponse)
		maxProduce := int16(-1)
		for _, k := range vs.ApiKeys {
			if k.ApiKey == 0 {
				maxProduce = k.MaxVersion
			}
		}
		md := topicMetadata(topic)
		mresp := rc.roundTrip(md).(*kmsg.MetadataResponse)
		if len(mresp.Topics) != 1 {
			t.Fatalf("metadata: %d topics", len(mresp.Topics))
		}
		id := mresp.Topics[0].TopicID
		// Produce goes to the partition leader's virtual broker.
		leader := mresp.Topics[0].Partitions[0].Leader
		var addr string
		for _, b := range mresp.Brokers {
			if b.NodeID == leader {
				addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
			}
		}
		if addr == "" {
			t.Fatalf("metadata names no broker for leader %d", leader)
		}
		rc = dialWire(t, addr, "raw")

		// acks=0 at v7 (forwarded as bytes) and at the newest version
		// (decoded to translate the topic id), each followed by requests
		// that are answered; every answer must carry its own correlation id.
		rc.send(rawProduce(7, 0, topic, [16]byte{}, "b-0"))
		rc.roundTrip(md)
		rc.send(rawProduce(maxProduce, 0, topic, id, "b-1"))
		acked := rc.roundTrip(rawProduce(7, 1, topic, [16]byte{}, "b-2")).(*kmsg.ProduceResponse)
		if ec := acked.Topics[0].Partitions[0].ErrorCode; ec != 0 {
			t.Errorf("acks=1 produce after acks=0: error %d", ec)
		}
		rc.send(rawProduce(maxProduce, 0, topic, id, "b-3"))
		rc.roundTrip(kmsg.NewPtrApiVersionsRequest())
		waitRecordCount(ctx, t, source, topic, 2*n+4)
	})

	var want []string
	for i := range 2 * n {
		want = append(want, "a-"+strconv.Itoa(i))
	}
	want = append(want, "b-0", "b-1", "b-2", "b-3")
	got := readPartitionZero(ctx, t, source, topic, len(want))
	if !slices.Equal(got, want) {
		t.Errorf("partition holds %d records %v..., want %d in produce order", len(got), firstFew(got), len(want))
	}
	assertNoConnErrorsSince(t, tp.reg, before)
	if n := disc.n.Load(); n != 0 {
		t.Errorf("acks=0 producer saw %d broker disconnects", n)
	}
}

// --- helpers shared by the bad-input and gate tests ---

func sizePrefix(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// wireConn is a client connection that writes arbitrary bytes and reads
// response frames.
type wireConn struct {
	t    testing.TB
	nc   net.Conn
	f    *kmsg.RequestFormatter
	corr int32
}

func dialWire(t testing.TB, addr, clientID string) *wireConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &wireConn{t: t, nc: nc, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)), corr: 1000}
}

func (c *wireConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send writes req with the next correlation id and returns it.
func (c *wireConn) send(req kmsg.Request) int32 {
	c.t.Helper()
	c.corr++
	c.write(c.f.AppendRequest(nil, req, c.corr))
	return c.corr
}

// tryReadFrame reads one response frame (without its size), waiting up to
// 10 s.
func (c *wireConn) tryReadFrame() ([]byte, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(c.nc, sz[:]); err != nil {
		return nil, err
	}
	frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
	if _, err := io.ReadFull(c.nc, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func (c *wireConn) readFrame() []byte {
	c.t.Helper()
	frame, err := c.tryReadFrame()
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	if len(frame) < 4 {
		c.t.Fatalf("response of %d bytes", len(frame))
	}
	return frame
}

// recv reads the response to req, sent with correlation id corr, and decodes
// it at req's version.
func (c *wireConn) recv(req kmsg.Request, corr int32) kmsg.Response {
	c.t.Helper()
	frame := c.readFrame()
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		c.t.Fatalf("%s v%d: response correlation id %d, want %d", kmsg.NameForKey(req.Key()), req.GetVersion(), got, corr)
	}
	body, err := stripResponseHeader(req.Key(), req.GetVersion(), frame)
	if err != nil {
		c.t.Fatalf("%s v%d response: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		c.t.Fatalf("decode %s v%d response: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return resp
}

func (c *wireConn) roundTrip(req kmsg.Request) kmsg.Response {
	c.t.Helper()
	return c.recv(req, c.send(req))
}

// expectClosed waits for the proxy to close the connection and fails if it
// sends anything first.
func (c *wireConn) expectClosed() {
	c.t.Helper()
	if err := c.nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(c.nc)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("connection still open after 10s")
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("reading until close: %v", err)
	}
	if len(b) > 0 {
		c.t.Errorf("proxy sent %d bytes (%x) before closing", len(b), b[:min(len(b), 32)])
	}
}

// stripResponseHeader strips the response header: the correlation id, and the tag
// section of flexible responses other than ApiVersions.
func stripResponseHeader(key, version int16, frame []byte) ([]byte, error) {
	if len(frame) < 4 {
		return nil, fmt.Errorf("%d-byte response", len(frame))
	}
	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	if key == 18 || !req.IsFlexible() {
		return frame[4:], nil
	}
	b := kbin.Reader{Src: frame[4:]}
	kmsg.SkipTags(&b)
	if !b.Ok() {
		return nil, errors.New("response header tags overrun the frame")
	}
	return b.Src, nil
}

// rawProduce builds a Produce of one partition (0) holding one v2 batch
// with the given values; at v13+ the topic is named by id.
func rawProduce(version, acks int16, topic string, id [16]byte, values ...string) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version = version
	req.Acks = acks
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = plainBatch(values...)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// plainBatch encodes a magic v2 batch, uncompressed, non-idempotent.
func plainBatch(values ...string) []byte {
	var recs []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // everything after the 1-byte varint of 0
		recs = r.AppendTo(recs)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(max(len(values)-1, 0)),
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(values)), Records: recs,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// gatheredValue sums the samples of a counter or gauge family whose labels
// include the given name/value pairs.
func gatheredValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// connErrorsByReason returns connection_errors_total by reason.
func connErrorsByReason(t testing.TB, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_proxy_connection_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func countDelta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// waitOneConnError waits until exactly one connection error, with the given
// reason, has been counted since before.
func waitOneConnError(t testing.TB, g prometheus.Gatherer, before map[string]float64, reason string) {
	t.Helper()
	eventually(t, 10*time.Second, "connection error "+reason, func() error {
		d := countDelta(before, connErrorsByReason(t, g))
		if len(d) == 0 {
			return errNotYet
		}
		if len(d) != 1 || d[reason] != 1 {
			t.Fatalf("connection errors since the fault: %v, want exactly {%s: 1}", d, reason)
		}
		return nil
	})
}

func assertNoConnErrorsSince(t testing.TB, g prometheus.Gatherer, before map[string]float64) {
	t.Helper()
	if d := countDelta(before, connErrorsByReason(t, g)); len(d) != 0 {
		t.Errorf("connection errors: %v, want none", d)
	}
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t testing.TB) string {
	t.Helper()
	// A socket bound to the port and never listening: a connection to it
	// is refused, and no other socket gets the port until the test ends.
	// (A listener opened and closed frees the port, which another test's
	// listener could take — the "dead" cluster then answered a switch.)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// brokerDisconnects counts a franz-go client's broker disconnects.
type brokerDisconnects struct{ n atomic.Int64 }

func (d *brokerDisconnects) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { d.n.Add(1) }

// bystanders are a producer and a consumer that keep using the proxy while
// other connections misbehave; none of their connections may be closed.
type bystanders struct {
	topic      string
	prod, cons *kgo.Client
	disc       brokerDisconnects
}

func newBystanders(t *testing.T, tp *testProxy, topic string) *bystanders {
	t.Helper()
	l := &bystanders{topic: topic}
	common := []kgo.Opt{kgo.WithHooks(&l.disc), kgo.ConnIdleTimeout(10 * time.Minute)}
	l.prod = tp.client(t, common...)
	l.cons = tp.client(t, append(common, kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))...)
	return l
}

// check produces ten records tagged tag and consumes them back.
func (l *bystanders) check(ctx context.Context, t *testing.T, tag string) {
	t.Helper()
	want := map[string]bool{}
	var rs []*kgo.Record
	for i := range 10 {
		v := fmt.Sprintf("%s/%d", tag, i)
		want[v] = true
		rs = append(rs, &kgo.Record{Topic: l.topic, Value: []byte(v)})
	}
	if err := l.prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("healthy producer (%s): %v", tag, err)
	}
	for len(want) > 0 {
		fs := l.cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("healthy consumer (%s): %d records missing", tag, len(want))
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Errorf("healthy consumer (%s): %s/%d: %v", tag, topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) { delete(want, string(r.Value)) })
	}
}

func (l *bystanders) assertNoDisconnects(t *testing.T) {
	t.Helper()
	if n := l.disc.n.Load(); n != 0 {
		t.Errorf("healthy clients saw %d broker disconnects, want 0", n)
	}
}

// produceTagged produces prefix-i for i in [from, to) in order.
func produceTagged(ctx context.Context, t *testing.T, cl *kgo.Client, topic, prefix string, from, to int) {
	t.Helper()
	rs := make([]*kgo.Record, 0, to-from)
	for i := from; i < to; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Value: []byte(prefix + "-" + strconv.Itoa(i))})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// waitRecordCount waits until the topic's partitions hold n records in all.
func waitRecordCount(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, n int64) {
	t.Helper()
	adm := kadm.NewClient(c.Client(t))
	eventually(t, 20*time.Second, fmt.Sprintf("%d records in %s", n, topic), func() error {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return err
		}
		var sum int64
		ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
		if sum != n {
			return fmt.Errorf("%d records", sum)
		}
		return nil
	})
}

// readPartitionZero reads n record values of a single-partition topic, straight from
// the cluster, in offset order.
func readPartitionZero(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200*time.Millisecond))
	var out []string
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d of %d records", topic, len(out), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("read %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	return out
}

func firstFew(s []string) []string { return s[:min(len(s), 5)] }

// faultAction is what a faultyRelay does with one request.
type faultAction int

const (
	faultNone         faultAction = iota // relay request and response
	faultHalfResponse                    // relay the request, write half the response, close
	faultHoldResponse                    // relay the request, withhold the response until released
)

// faultyRelay is a fake upstream broker: it relays each connection to a
// one-broker kfake cluster, rewriting broker addresses to its own, and can
// misbehave on chosen requests. Like a Kafka broker, it closes a connection
// on an API key it does not know, after handing the frame to unknown.
type faultyRelay struct {
	ln      net.Listener
	backend string
	host    string
	port    int32
	decide  func(key, version int16, clientID string) faultAction

	unknown chan []byte   // frames of unknown API keys, as received
	held    chan struct{} // one value per withheld response
	release chan struct{} // closed to let withheld responses go
	relOnce sync.Once
	halves  atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newFaultyRelay(t *testing.T, backend *kafkatest.Cluster, decide func(key, version int16, clientID string) faultAction) *faultyRelay {
	t.Helper()
	if len(backend.Bootstrap) != 1 {
		t.Fatalf("relay needs a one-broker cluster, got %v", backend.Bootstrap)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if decide == nil {
		decide = func(int16, int16, string) faultAction { return faultNone }
	}
	tcp := ln.Addr().(*net.TCPAddr)
	b := &faultyRelay{
		ln: ln, backend: backend.Bootstrap[0], host: tcp.IP.String(), port: int32(tcp.Port), decide: decide,
		unknown: make(chan []byte, 16), held: make(chan struct{}, 16), release: make(chan struct{}),
		conns: map[net.Conn]struct{}{},
	}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		ln.Close()
		b.releaseHeld()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *faultyRelay) cluster(name string) *kafkatest.Cluster {
	return &kafkatest.Cluster{Name: name, Bootstrap: []string{b.ln.Addr().String()}}
}

func (b *faultyRelay) releaseHeld() { b.relOnce.Do(func() { close(b.release) }) }

func (b *faultyRelay) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-b.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the relay to be held")
	}
}

func (b *faultyRelay) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *faultyRelay) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			b.mu.Lock()
			for c := range b.conns {
				c.Close()
			}
			b.conns = nil
			b.mu.Unlock()
			return
		}
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			b.serve(c)
		}()
	}
}

func (b *faultyRelay) serve(client net.Conn) {
	back, err := net.Dial("tcp", b.backend)
	if err != nil {
		return
	}
	defer back.Close()
	if !b.track(back) {
		return
	}
	for {
		frame, err := relayReadFrame(client)
		if err != nil {
			return
		}
		r := kbin.Reader{Src: frame}
		key, version := r.Int16(), r.Int16()
		r.Int32()
		cid := r.NullableString()
		req := kmsg.RequestForKey(key)
		if req == nil || !r.Ok() {
			b.unknown <- append([]byte(nil), frame...)
			return
		}
		req.SetVersion(version)
		clientID := ""
		if cid != nil {
			clientID = *cid
		}
		action := b.decide(key, version, clientID)
		if err := relayWriteFrame(back, frame); err != nil {
			return
		}
		if key == 0 {
			if req.IsFlexible() {
				kmsg.SkipTags(&r)
			}
			if err := req.ReadFrom(r.Src); err == nil && req.(*kmsg.ProduceRequest).Acks == 0 {
				continue
			}
		}
		resp, err := relayReadFrame(back)
		if err != nil {
			return
		}
		resp = b.rewrite(key, version, resp)
		switch action {
		case faultHalfResponse:
			full := append(sizePrefix(uint32(len(resp))), resp...)
			b.halves.Add(1)
			client.Write(full[:len(full)/2])
			return
		case faultHoldResponse:
			b.held <- struct{}{}
			<-b.release
		}
		if err := relayWriteFrame(client, resp); err != nil {
			return
		}
	}
}

// rewrite points the broker addresses of Metadata, FindCoordinator and
// DescribeCluster responses at the relay.
func (b *faultyRelay) rewrite(key, version int16, frame []byte) []byte {
	switch key {
	case 3, 10, 60:
	default:
		return frame
	}
	body, err := stripResponseHeader(key, version, frame)
	if err != nil {
		return frame
	}
	hdr := frame[:len(frame)-len(body)]
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return frame
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = b.host, b.port
		}
	case *kmsg.FindCoordinatorResponse:
		if r.NodeID >= 0 {
			r.Host, r.Port = b.host, b.port
		}
		for i := range r.Coordinators {
			if r.Coordinators[i].NodeID >= 0 {
				r.Coordinators[i].Host, r.Coordinators[i].Port = b.host, b.port
			}
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = b.host, b.port
		}
	}
	return resp.AppendTo(append([]byte(nil), hdr...))
}

func relayReadFrame(r io.Reader) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return nil, err
	}
	frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err := io.ReadFull(r, frame)
	return frame, err
}

func relayWriteFrame(w io.Writer, frame []byte) error {
	_, err := w.Write(append(sizePrefix(uint32(len(frame))), frame...))
	return err
}
