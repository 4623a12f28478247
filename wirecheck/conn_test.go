package wirecheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// broker answers on the far end of a pipe: it reads one request frame per
// entry of answers and writes that answer (a response frame without its
// size) back.
func broker(t *testing.T, nc net.Conn, answers ...[]byte) {
	t.Helper()
	go func() {
		defer nc.Close()
		for _, a := range answers {
			var size [4]byte
			if _, err := io.ReadFull(nc, size[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
				return
			}
			if a == nil {
				continue // no answer: acks=0
			}
			nc.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(a))), a...))
		}
	}()
}

func requestFrame(req kmsg.Request, corr int32) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("c")).AppendRequest(nil, req, corr)
}

func readResponse(t *testing.T, c *Conn) ([]byte, error) {
	t.Helper()
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return nil, err
	}
	frame := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err := io.ReadFull(c, frame)
	return frame, err
}

func metadataAnswer(corr int32, tail []byte) []byte {
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(12)
	b := kbin.AppendInt32(nil, corr)
	b = append(b, 0) // header tags
	b = resp.AppendTo(b)
	if tail != nil {
		b = append(b[:len(b)-1], tail...)
	}
	return b
}

func TestConnPassesGoodResponses(t *testing.T) {
	client, server := net.Pipe()
	c := NewConn(client, 1<<20)
	good := metadataAnswer(7, nil)
	broker(t, server, nil, good)
	// A Produce with acks=0 (no answer), then a Metadata request.
	produce := kmsg.NewPtrProduceRequest()
	produce.SetVersion(9)
	produce.Acks = 0
	metadata := kmsg.NewPtrMetadataRequest()
	metadata.SetVersion(12)
	go func() {
		c.Write(requestFrame(produce, 6))
		w := requestFrame(metadata, 7)
		c.Write(w[:5]) // a request written in pieces
		c.Write(w[5:])
	}()
	got, err := readResponse(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, good) {
		t.Fatalf("response changed on the way: %x, want %x", got, good)
	}
}

func TestConnRefusesHostileResponses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
		want   string
	}{
		{"2^32-1 tagged fields", metadataAnswer(7, kbin.AppendUvarint(nil, 0xffff_ffff)), "tagged field count 4294967295"},
		{"header tags overrun", append(kbin.AppendInt32(nil, 7), 0x05, 1), "tagged field count 5 exceeds"},
		{"unknown correlation id", metadataAnswer(99, nil), "correlation id 99 answers no request"},
		{"frame too large", append(kbin.AppendInt32(nil, 7), make([]byte, 2<<20)...), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			c := NewConn(client, 1<<20)
			broker(t, server, tc.answer)
			req := kmsg.NewPtrMetadataRequest()
			req.SetVersion(12)
			go c.Write(requestFrame(req, 7))
			_, err := readResponse(t, c)
			if !errors.Is(err, ErrMalformedResponse) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("got %v, want ErrMalformedResponse saying %q", err, tc.want)
			}
		})
	}
}

// TestConnApiVersionsFallback: a broker answers an ApiVersions version it
// does not know with UNSUPPORTED_VERSION in a v0 body (KIP-511); that is
// walked as v0, as franz-go reads it.
func TestConnApiVersionsFallback(t *testing.T) {
	client, server := net.Pipe()
	c := NewConn(client, 1<<20)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	resp.ErrorCode = 35
	ak := kmsg.NewApiVersionsResponseApiKey()
	ak.ApiKey, ak.MaxVersion = 18, 3
	resp.ApiKeys = append(resp.ApiKeys, ak)
	answer := resp.AppendTo(kbin.AppendInt32(nil, 3))
	broker(t, server, answer)
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(5)
	go c.Write(requestFrame(req, 3))
	got, err := readResponse(t, c)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("got %x, %v; want the v0 answer passed", got, err)
	}
}
