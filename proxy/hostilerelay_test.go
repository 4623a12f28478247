package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zapcore"

	"github.com/switchyard/switchyard/wirecheck"
)

// hostileBroker is a fake Kafka broker for the proxy to talk to. It answers
// the proxy's own client and the bystander truthfully enough to serve
// (ApiVersions, Metadata naming itself), and every request of a fuzzing
// client ("fuzz-..." client ids) with a response of the request's key and
// version, filled with random content by reflection and then mutated:
// bytes flipped, cut short, lengthened, a varint of 2^32-1 or an int32 of
// 2^31-1 written over it, bytes inserted.
type hostileBroker struct {
	ln      net.Listener
	host    string
	port    int32
	seed    atomic.Int64
	mutated atomic.Int64 // mutated responses written

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newHostileBroker(t *testing.T) *hostileBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp := ln.Addr().(*net.TCPAddr)
	b := &hostileBroker{ln: ln, host: tcp.IP.String(), port: int32(tcp.Port), conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.conns = nil
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *hostileBroker) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.conns == nil {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			b.serve(c)
		}()
	}
}

func (b *hostileBroker) serve(c net.Conn) {
	for {
		frame, err := relayReadFrame(c)
		if err != nil {
			return
		}
		r := kbin.Reader{Src: frame}
		key, version, corr := r.Int16(), r.Int16(), r.Int32()
		cid := r.NullableString()
		req := kmsg.RequestForKey(key)
		if !r.Ok() || req == nil || version > req.MaxVersion() {
			return // as a broker does with what it cannot read
		}
		req.SetVersion(version)
		if req.IsFlexible() {
			kmsg.SkipTags(&r)
		}
		if key == keyProduce {
			// The proxy forwards what the fuzzing client encoded with kmsg.
			if req.ReadFrom(r.Src) == nil && req.(*kmsg.ProduceRequest).Acks == 0 {
				continue
			}
		}
		seed := b.seed.Add(1)
		fuzz := cid != nil && strings.HasPrefix(*cid, "fuzz-")
		resp := b.response(req, key, version, fuzz, seed)
		out := binary.BigEndian.AppendUint32(nil, uint32(corr))
		if key != keyApiVersions && req.IsFlexible() {
			out = append(out, 0)
		}
		out = resp.AppendTo(out)
		if fuzz {
			rng := rand.New(rand.NewPCG(uint64(seed), 99))
			if rng.IntN(10) != 0 { // one in ten goes out intact
				out = mutate(rng, out)
				b.mutated.Add(1)
			}
		}
		if err := relayWriteFrame(c, out); err != nil {
			return
		}
	}
}

// response is what the broker answers: truthful for ApiVersions and
// Metadata of clients that are not fuzzing, random content otherwise.
func (b *hostileBroker) response(req kmsg.Request, key, version int16, fuzz bool, seed int64) kmsg.Response {
	resp := req.ResponseKind()
	switch r := resp.(type) {
	case *kmsg.ApiVersionsResponse:
		if !fuzz {
			for k := int16(0); k <= maxKmsgKey(); k++ {
				if kr := kmsg.RequestForKey(k); kr != nil {
					ak := kmsg.NewApiVersionsResponseApiKey()
					ak.ApiKey, ak.MaxVersion = k, kr.MaxVersion()
					r.ApiKeys = append(r.ApiKeys, ak)
				}
			}
			r.SetVersion(version)
			return r
		}
	case *kmsg.MetadataResponse:
		if !fuzz {
			br := kmsg.NewMetadataResponseBroker()
			br.NodeID, br.Host, br.Port = 1, b.host, b.port
			r.Brokers = append(r.Brokers, br)
			r.ClusterID = kmsg.StringPtr("hostile")
			r.ControllerID = 1
			r.SetVersion(version)
			return r
		}
	}
	newFiller(seed).fillMessage(resp, version)
	// Brokers named in responses are this broker, so that the proxy,
	// which learns addresses from them, can still dial.
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = b.host, b.port
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = b.host, b.port
		}
	}
	return resp
}

// mutate returns frame (a response frame without its size) damaged in one
// of the ways a broker gone wrong, or anyone in the middle of a plaintext
// connection, could damage it. The correlation id is kept nine times in
// ten, so that most damage reaches the decoders behind its check.
func mutate(rng *rand.Rand, frame []byte) []byte {
	out := append([]byte(nil), frame...)
	lo := 4
	if rng.IntN(10) == 0 {
		lo = 0
	}
	if len(out) <= lo {
		return append(out, byte(rng.Uint32()))
	}
	at := lo + rng.IntN(len(out)-lo)
	switch rng.IntN(6) {
	case 0: // flip bytes
		for range 1 + rng.IntN(4) {
			out[lo+rng.IntN(len(out)-lo)] ^= byte(1 + rng.IntN(255))
		}
	case 1: // cut short
		out = out[:at]
	case 2: // lengthen
		for range 1 + rng.IntN(16) {
			out = append(out, byte(rng.Uint32()))
		}
	case 3: // a huge varint: a tag count, a compact length
		huge := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
		out = append(out[:at], append(huge, out[min(at+5, len(out)):]...)...)
	case 4: // a huge int32: an array count, a bytes length
		if at+4 <= len(out) {
			binary.BigEndian.PutUint32(out[at:], 0x7fffffff)
		}
	case 5: // insert bytes
		ins := make([]byte, 1+rng.IntN(8))
		for i := range ins {
			ins[i] = byte(rng.Uint32())
		}
		out = append(out[:at], append(ins, out[at:]...)...)
	}
	return out
}

// fuzzRequestKeys are the API keys fuzzing clients send: every key kmsg
// knows a request for, at the versions the proxy can walk.
func fuzzRequestKeys() []int16 {
	var keys []int16
	for k := int16(0); k <= maxKmsgKey(); k++ {
		if kmsg.RequestForKey(k) != nil && wirecheck.MaxRequestVersion(k) >= 0 {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestHostileBroker runs the proxy against hostileBroker: clients send
// requests of every key at random versions, and the broker answers nearly
// all of them damaged. The proxy must answer or close each of those client
// connections within a few seconds (a hang or a spin fails), never panic
// (a panic kills the test binary; a recovered one is counted as reason
// "panic" and fails), and keep serving a bystander connection throughout.
//
// SWITCHYARD_FUZZ_UPSTREAM=30m runs it for that long (make fuzz-upstream);
// by default it sends 1500 requests.
func TestHostileBroker(t *testing.T) {
	var duration time.Duration
	if s := os.Getenv("SWITCHYARD_FUZZ_UPSTREAM"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SWITCHYARD_FUZZ_UPSTREAM=%q: %v", s, err)
		}
		duration = d
	}
	const defaultRequests = 1500
	hb := newHostileBroker(t)
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "hostile", Bootstrap: []string{hb.ln.Addr().String()}}}
	cfg.Active = "hostile"
	cfg.DialTimeout = 2 * time.Second
	p := runProxy(t, cfg, reg, zapcore.FatalLevel) // thousands of expected faults: not logged
	eventually(t, 10*time.Second, "proxy ready", func() error { return p.Ready() })

	keys := fuzzRequestKeys()
	deadline := time.Now().Add(duration)
	var sent, answered, closed atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- fuzzClient(p.Addr().String(), fmt.Sprintf("fuzz-%d", w), int64(w), keys, func() bool {
				if duration > 0 {
					return time.Now().Before(deadline)
				}
				return sent.Add(1) <= defaultRequests
			}, &answered, &closed)
		}()
	}
	// The bystander: one connection, one Metadata round trip at a time,
	// answered truthfully by the broker, all through the run.
	stop := make(chan struct{})
	bystander := make(chan error, 1)
	go func() {
		bystander <- func() error {
			rc, err := net.DialTimeout("tcp", p.Addr().String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer rc.Close()
			f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("bystander"))
			for corr := int32(1); ; corr++ {
				select {
				case <-stop:
					return nil
				default:
				}
				req := kmsg.NewPtrMetadataRequest()
				req.SetVersion(12)
				if _, err := rc.Write(f.AppendRequest(nil, req, corr)); err != nil {
					return fmt.Errorf("bystander write: %w", err)
				}
				rc.SetReadDeadline(time.Now().Add(10 * time.Second))
				frame, err := relayReadFrame(rc)
				if err != nil {
					return fmt.Errorf("bystander read after %d round trips: %w", corr-1, err)
				}
				if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
					return fmt.Errorf("bystander: correlation id %d, want %d", got, corr)
				}
				resp := kmsg.NewPtrMetadataResponse()
				resp.SetVersion(12)
				if err := resp.ReadFrom(frame[5:]); err != nil || len(resp.Brokers) != 1 {
					return fmt.Errorf("bystander: metadata response %v, %d brokers", err, len(resp.Brokers))
				}
			}
		}()
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	close(stop)
	if err := <-bystander; err != nil {
		t.Errorf("the bystander connection was disturbed: %v", err)
	}
	reasons := connErrorsByReason(t, reg)
	if n := reasons["panic"]; n > 0 {
		t.Errorf("%v panics recovered: a decode or patch is missing a bounds check", n)
	}
	if hb.mutated.Load() < int64(answered.Load()+closed.Load())/4 {
		t.Errorf("only %d damaged responses reached the proxy for %d requests", hb.mutated.Load(), answered.Load()+closed.Load())
	}
	var rs []string
	for r, n := range reasons {
		rs = append(rs, fmt.Sprintf("%s=%v", r, n))
	}
	sort.Strings(rs)
	t.Logf("%d requests answered, %d ended with a closed connection, %d damaged responses; faults: %s",
		answered.Load(), closed.Load(), hb.mutated.Load(), strings.Join(rs, " "))
}

// fuzzClient sends random requests of the given keys, one at a time, for
// as long as more() says, and expects each to be answered or its
// connection closed within 5 s.
func fuzzClient(addr, clientID string, seed int64, keys []int16, more func() bool, answered, closed *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID))
	var nc net.Conn
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	for i := int32(1); more(); i++ {
		if nc == nil {
			var err error
			if nc, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
				return fmt.Errorf("%s: dial the proxy: %w", clientID, err)
			}
		}
		key := keys[rng.IntN(len(keys))]
		req := kmsg.RequestForKey(key)
		version := int16(rng.IntN(int(min(req.MaxVersion(), wirecheck.MaxRequestVersion(key))) + 1))
		newFiller(rng.Int64()).fillMessage(req, version)
		if p, ok := req.(*kmsg.ProduceRequest); ok && p.Acks == 0 {
			p.Acks = 1
		}
		if _, err := nc.Write(f.AppendRequest(nil, req, i)); err != nil {
			nc.Close()
			nc = nil
			closed.Add(1)
			continue
		}
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := relayReadFrame(nc)
		switch {
		case err == nil:
			answered.Add(1)
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			var stacks strings.Builder
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			return fmt.Errorf("%s: %s v%d: neither answered nor closed within 5 s (a hang or a spin); goroutines:\n%s", clientID, apiName(key), version, stacks.String())
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), isReset(err):
			closed.Add(1)
		default:
			return fmt.Errorf("%s: %s v%d: read: %w", clientID, apiName(key), version, err)
		}
		nc.Close()
		nc = nil
	}
	return nil
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}
