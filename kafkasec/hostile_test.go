package kafkasec_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/wirecheck"
)

// TestKgoClientRefusesHostileResponses: the franz-go clients the proxy and
// the mirror build from KgoOpts see a broker's response only after it has
// been walked. A Metadata response declaring 2^32-1 tagged fields, which
// kmsg would loop over for a minute in the client's goroutine, is refused
// as malformed at once.
func TestKgoClientRefusesHostileResponses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serveHostile(nc)
		}
	}()
	sec, err := kafkasec.New(context.Background(), "hostile", kafkasec.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(sec.KgoOpts(2*time.Second), kgo.SeedBrokers(ln.Addr().String()), kgo.RequestRetries(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if !errors.Is(err, wirecheck.ErrMalformedResponse) || !strings.Contains(err.Error(), "Metadata") {
		t.Fatalf("metadata request: %v after %v, want ErrMalformedResponse for the Metadata response", err, time.Since(start))
	}
}

// serveHostile answers ApiVersions truthfully and everything else with a Metadata v4 body whose topic count is
// 2^31-1, or a flexible one declaring 2^32-1 tagged fields.
func serveHostile(nc net.Conn) {
	defer nc.Close()
	for {
		var size [4]byte
		if _, err := io.ReadFull(nc, size[:]); err != nil {
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(nc, frame); err != nil {
			return
		}
		key, version, corr := int16(binary.BigEndian.Uint16(frame)), int16(binary.BigEndian.Uint16(frame[2:])), int32(binary.BigEndian.Uint32(frame[4:]))
		out := kbin.AppendInt32(nil, corr)
		switch key {
		case 18:
			resp := kmsg.NewPtrApiVersionsResponse()
			for _, k := range []int16{3, 18} {
				ak := kmsg.NewApiVersionsResponseApiKey()
				ak.ApiKey, ak.MaxVersion = k, kmsg.RequestForKey(k).MaxVersion()
				resp.ApiKeys = append(resp.ApiKeys, ak)
			}
			resp.SetVersion(version)
			out = resp.AppendTo(out)
		default:
			resp := kmsg.NewPtrMetadataResponse()
			resp.SetVersion(version)
			if resp.IsFlexible() {
				out = append(out, 0) // header tags
				body := resp.AppendTo(nil)
				out = kbin.AppendUvarint(append(out, body[:len(body)-1]...), 0xffff_ffff)
			} else {
				out = append(out, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff) // throttle, brokers
			}
		}
		nc.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(out))), out...))
	}
}
