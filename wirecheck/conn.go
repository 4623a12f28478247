package wirecheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kbin"
)

// Conn is a client's connection to a broker that checks every response
// before the client reads it. It follows the requests the client writes
// (their API key, version and correlation id), reads each response frame
// whole, walks its body against the definition of the request it answers
// (Response), and only then hands it to the client. A response that does
// not fit, or answers no request, is an error from Read, and the client
// drops the connection as it does on any read error.
//
// It is for clients that decode with kmsg (franz-go's kgo): their decoding
// then costs bounded CPU whatever a broker, or anyone in the middle of a
// plaintext connection, sends. Read and Write may be called concurrently,
// as kgo does; neither may be called concurrently with itself.
type Conn struct {
	net.Conn
	maxFrame int

	mu      sync.Mutex
	pending []sent // requests written and not yet answered, in order

	// Write side: the bytes of the frame being written so far, until its
	// header (size, key, version, correlation id) is complete, and how
	// many bytes of it are still to come.
	whead [12]byte
	wgot  int
	wleft int

	// Read side: the checked frame being read out, size prefix included.
	rframe []byte
	roff   int
}

type sent struct {
	key, version int16
	corr         int32
}

// ErrMalformedResponse is wrapped by the errors Conn.Read returns for a
// response it refuses.
var ErrMalformedResponse = errors.New("malformed response")

// NewConn wraps nc, a connection a client writes requests on. Responses
// larger than maxFrame bytes are refused without being read whole.
func NewConn(nc net.Conn, maxFrame int) *Conn {
	return &Conn{Conn: nc, maxFrame: maxFrame}
}

// Write writes b and notes the requests it carries.
func (c *Conn) Write(b []byte) (int, error) {
	c.note(b)
	return c.Conn.Write(b)
}

// note follows the request frames in b, which continue what earlier
// writes started.
func (c *Conn) note(b []byte) {
	for len(b) > 0 {
		if c.wleft > 0 {
			n := min(c.wleft, len(b))
			c.wleft -= n
			b = b[n:]
			continue
		}
		n := copy(c.whead[c.wgot:], b)
		c.wgot += n
		b = b[n:]
		if c.wgot < len(c.whead) {
			return
		}
		size := int(int32(binary.BigEndian.Uint32(c.whead[:4])))
		s := sent{
			key:     int16(binary.BigEndian.Uint16(c.whead[4:])),
			version: int16(binary.BigEndian.Uint16(c.whead[6:])),
			corr:    int32(binary.BigEndian.Uint32(c.whead[8:])),
		}
		c.wgot, c.wleft = 0, max(size-8, 0)
		c.mu.Lock()
		c.pending = append(c.pending, s)
		c.mu.Unlock()
	}
}

// Read reads the checked responses.
func (c *Conn) Read(b []byte) (int, error) {
	if c.roff == len(c.rframe) {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.rframe[c.roff:])
	c.roff += n
	return n, nil
}

// next reads and checks the next response frame.
func (c *Conn) next() error {
	var size [4]byte
	if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
		return err
	}
	n := int(int32(binary.BigEndian.Uint32(size[:])))
	if n < 4 || n > c.maxFrame {
		return fmt.Errorf("%w: a frame of %d bytes (at most %d)", ErrMalformedResponse, n, c.maxFrame)
	}
	// Grown as the bytes arrive, so that a size prefix alone cannot make
	// the connection allocate it. A buffer of up to 1 MiB is kept for the
	// next response.
	frame := c.rframe[:0]
	if cap(frame) > 1<<20 {
		frame = nil
	}
	frame = append(frame, size[:]...)
	for len(frame) < 4+n {
		chunk := min(4+n-len(frame), max(len(frame), 64<<10))
		if cap(frame)-len(frame) < chunk {
			grown := make([]byte, len(frame), len(frame)+chunk)
			copy(grown, frame)
			frame = grown
		}
		m, err := io.ReadFull(c.Conn, frame[len(frame):len(frame)+chunk])
		frame = frame[:len(frame)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	corr := int32(binary.BigEndian.Uint32(frame[4:]))
	req, ok := c.answered(corr)
	if !ok {
		return fmt.Errorf("%w: correlation id %d answers no request in flight", ErrMalformedResponse, corr)
	}
	body, err := responseBody(req.key, req.version, frame[8:])
	if err == nil {
		version := req.version
		if req.key == 18 && len(body) > 2 && body[1] == 35 {
			// UNSUPPORTED_VERSION: the broker answers an ApiVersions it
			// does not know with a v0 body (KIP-511), and franz-go reads
			// it as v0 when it sees that code's low byte; so is it walked.
			version = 0
		}
		err = Response(req.key, version, body)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedResponse, err)
	}
	c.rframe, c.roff = frame, 0
	return nil
}

// answered takes the request that a response with correlation id corr
// answers off the pending list. Brokers answer in order; requests before
// it that get no answer (a Produce with acks=0) are dropped with it.
func (c *Conn) answered(corr int32) (sent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.pending {
		if s.corr == corr {
			c.pending = c.pending[i+1:]
			return s, true
		}
	}
	return sent{}, false
}

// responseBody skips the response header after the correlation id: a tag
// section in flexible versions, except for ApiVersions, whose responses
// keep header v0 so that any client can read them (KIP-511).
func responseBody(key, version int16, b []byte) ([]byte, error) {
	v, ok := lookup(responses, key, version)
	if !ok {
		return nil, fmt.Errorf("api key %d v%d response: %w", key, version, ErrUnknownVersion)
	}
	if key == 18 || !v.flexible.has(version) {
		return b, nil
	}
	r := kbin.Reader{Src: b}
	n := r.Uvarint()
	if !r.Ok() || int64(n)*2 > int64(len(r.Src)) {
		return nil, fmt.Errorf("api key %d v%d response header: tagged field count %d exceeds the %d bytes left", key, version, n, len(r.Src))
	}
	for range n {
		r.Uvarint()
		r.Span(int(r.Uvarint()))
		if !r.Ok() {
			return nil, fmt.Errorf("api key %d v%d response header: tagged fields overrun the frame", key, version)
		}
	}
	return r.Src, nil
}
