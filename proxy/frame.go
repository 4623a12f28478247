package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/wirecheck"
)

// Frame errors. Each closes the one connection that produced it.
var (
	errFrameTooLarge = errors.New("frame exceeds the maximum size")
	errFrameNegative = errors.New("negative frame size")
	errBadHeader     = errors.New("malformed request header")
)

// readFrame reads one size-prefixed Kafka frame and returns its payload
// (without the 4-byte size). A size over limit or below zero is an error and
// nothing more is read. buf is reused when large enough.
func readFrame(r io.Reader, limit int32, buf []byte) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(sz[:]))
	if n < 0 {
		return nil, fmt.Errorf("%w: %d", errFrameNegative, n)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d > %d bytes", errFrameTooLarge, n, limit)
	}
	if cap(buf) >= int(n) {
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, frameErr(n, err)
		}
		return buf, nil
	}
	// Grow the buffer as bytes arrive, doubling from 64 KiB, so a size
	// prefix alone (a peer announcing 100 MiB and sending nothing) cannot
	// make the proxy allocate the whole frame.
	buf = buf[:0]
	for len(buf) < int(n) {
		chunk := min(int(n)-len(buf), max(len(buf), 64<<10))
		if cap(buf)-len(buf) < chunk {
			grown := make([]byte, len(buf), len(buf)+chunk)
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, frameErr(n, err)
		}
	}
	return buf, nil
}

func frameErr(n int32, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d-byte frame: %w", n, err)
}

// requestHeader is the parsed header of a client request.
//
// Request header v1: int16 key, int16 version, int32 correlation id,
// nullable string client id (int16 length even in the flexible header v2),
// then tagged fields when the request version is flexible.
type requestHeader struct {
	Key      int16
	Version  int16
	CorrID   int32
	ClientID *string
	// BodyOffset is where the request body starts in the frame.
	BodyOffset int
	// Flexible reports a flexible (v2) header; false for keys kmsg does not know.
	Flexible bool
	// Known is false for API keys and versions kmsg or wirecheck does not
	// know; their bodies are forwarded blind.
	Known bool
	// Checked: the body was walked by wirecheck (decode.go) and may be
	// decoded.
	Checked bool
}

// parseRequestHeader parses the header at the start of a request frame.
func parseRequestHeader(frame []byte) (requestHeader, error) {
	var h requestHeader
	if len(frame) < 10 {
		return h, fmt.Errorf("%w: %d bytes", errBadHeader, len(frame))
	}
	b := kbin.Reader{Src: frame}
	h.Key = b.Int16()
	h.Version = b.Int16()
	h.CorrID = b.Int32()
	h.ClientID = b.NullableString()
	if !b.Ok() {
		return h, fmt.Errorf("%w: client id overruns the frame", errBadHeader)
	}
	if h.Version < 0 {
		return h, fmt.Errorf("%w: negative version %d for key %d", errBadHeader, h.Version, h.Key)
	}
	// A version above what kmsg knows may have changed its header; it is
	// forwarded blind like an unknown key. So is one wirecheck has no
	// definition for: its body cannot be walked, so it is never decoded.
	if sh := shapeOf(h.Key); sh.known && h.Version <= sh.maxVersion && wirecheck.KnowsRequest(h.Key, h.Version) {
		h.Known = true
		h.Flexible = sh.flexible(h.Version)
	}
	if h.Flexible {
		skipTags(&b)
		if !b.Ok() {
			return h, fmt.Errorf("%w: tagged fields overrun the frame", errBadHeader)
		}
	}
	h.BodyOffset = len(frame) - len(b.Src)
	return h, nil
}

// skipTags skips a tagged-field section.
func skipTags(b *kbin.Reader) {
	n := b.Uvarint()
	for i := uint32(0); i < n && b.Ok(); i++ {
		b.Uvarint()
		l := b.Uvarint()
		b.Span(int(l))
	}
}

// appendRequestHeader appends a request header (without the size).
func appendRequestHeader(dst []byte, h requestHeader) []byte {
	dst = kbin.AppendInt16(dst, h.Key)
	dst = kbin.AppendInt16(dst, h.Version)
	dst = kbin.AppendInt32(dst, h.CorrID)
	dst = kbin.AppendNullableString(dst, h.ClientID)
	if h.Flexible {
		dst = append(dst, 0)
	}
	return dst
}

// responseHeaderLen returns the length of the response header that precedes
// the body of a response to a request with the given key and version:
// the correlation id, plus an empty tag section when the response is
// flexible. ApiVersions always answers with header v0 (KIP-511), so clients
// that do not know the broker's versions can still parse it.
func responseHeaderLen(key, version int16, resp []byte) (int, error) {
	if len(resp) < 4 {
		return 0, fmt.Errorf("response of %d bytes has no correlation id", len(resp))
	}
	if key == keyApiVersions || !isFlexible(key, version) {
		return 4, nil
	}
	b := kbin.Reader{Src: resp[4:]}
	skipTags(&b)
	if !b.Ok() {
		return 0, errors.New("response header tagged fields overrun the frame")
	}
	return len(resp) - len(b.Src), nil
}

// isFlexible reports whether the version of the key uses flexible encoding.
func isFlexible(key, version int16) bool { return shapeOf(key).flexible(version) }

// apiShape is what the per-request path needs to know of an API key. It
// is computed once from kmsg: kmsg.RequestForKey allocates a request struct
// on every call, which the proxy would otherwise do twice per request.
type apiShape struct {
	known        bool
	maxVersion   int16
	flexibleFrom int16 // first flexible version; -1 when none is
}

func (s apiShape) flexible(version int16) bool {
	return s.known && s.flexibleFrom >= 0 && version >= s.flexibleFrom
}

// apiShapes holds one apiShape per API key kmsg knows, indexed by key. It
// is data derived from kmsg's generated code, so sharing it process-wide is
// safe.
var apiShapes = sync.OnceValue(func() []apiShape {
	var shapes []apiShape
	for key := int16(0); key < 1024; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for int(key) >= len(shapes) {
			shapes = append(shapes, apiShape{})
		}
		sh := apiShape{known: true, maxVersion: req.MaxVersion(), flexibleFrom: -1}
		for v := int16(0); v <= sh.maxVersion; v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				sh.flexibleFrom = v
				break
			}
		}
		shapes[key] = sh
	}
	return shapes
})

func shapeOf(key int16) apiShape {
	shapes := apiShapes()
	if key < 0 || int(key) >= len(shapes) {
		return apiShape{}
	}
	return shapes[key]
}

// writeFrame writes the size prefix and the frame payload in one writev.
func writeFrame(w io.Writer, frame []byte) error {
	var sz [4]byte
	binary.BigEndian.PutUint32(sz[:], uint32(len(frame)))
	bufs := net.Buffers{sz[:], frame}
	_, err := bufs.WriteTo(w)
	return err
}

// responseFrame builds a response frame payload (without the size):
// correlation id, the response header's tag section when needed, the body.
func responseFrame(key, version int16, corrID int32, body []byte) []byte {
	dst := make([]byte, 0, 5+len(body))
	dst = kbin.AppendInt32(dst, corrID)
	if key != keyApiVersions && isFlexible(key, version) {
		dst = append(dst, 0)
	}
	return append(dst, body...)
}

// requestFrame builds a request frame payload (without the size).
func requestFrame(h requestHeader, body []byte) []byte {
	dst := make([]byte, 0, 32+len(body))
	dst = appendRequestHeader(dst, h)
	return append(dst, body...)
}
