package wirecheck

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// ErrUnknownVersion is returned for an API key and version with no message
// definition here: nothing can be said about its body, so it must not be
// decoded either.
var ErrUnknownVersion = errors.New("no message definition for this API key and version")

// MalformedError describes a body that does not fit its message definition.
type MalformedError struct {
	API     string // the API's name, e.g. "Metadata"
	Key     int16
	Version int16
	Request bool
	Offset  int // byte offset in the body where the walk stopped
	Size    int // the body's size
	Reason  string
}

func (e *MalformedError) Error() string {
	dir := "response"
	if e.Request {
		dir = "request"
	}
	return fmt.Sprintf("malformed %s v%d %s at byte %d of %d: %s", e.API, e.Version, dir, e.Offset, e.Size, e.Reason)
}

// Request checks the body of a request (what follows the request header)
// of the given API key and version. It returns nil when every length and
// count in the body fits in the bytes that follow it, a *MalformedError
// when one does not, and an error wrapping ErrUnknownVersion when there is
// no definition for the key and version.
//
// Request may change body in place: a tagged field Kafka defines for the
// struct at other versions only gets a tag number the struct never uses,
// so that a decoder keeps it as an unknown tag (see walker.tags). Call it
// on the bytes that will be decoded, not on a copy.
func Request(key, version int16, body []byte) error {
	_, err := check(requests, true, key, version, body, nil)
	return err
}

// Response checks the body of a response (what follows the response
// header) as Request checks a request.
func Response(key, version int16, body []byte) error {
	_, err := check(responses, false, key, version, body, nil)
	return err
}

// MaxStructElements bounds the elements of struct arrays in one message.
// A decoder allocates 50 to 200 bytes for each, and one can take as few as
// two bytes on the wire, so a 100 MiB frame could cost gigabytes to
// decode. A Metadata response of a million partitions stays below it.
const MaxStructElements = 1 << 20

// KnowsRequest reports whether requests of the key and version can be
// checked.
func KnowsRequest(key, version int16) bool { _, ok := lookup(requests, key, version); return ok }

// KnowsResponse reports whether responses of the key and version can be
// checked.
func KnowsResponse(key, version int16) bool { _, ok := lookup(responses, key, version); return ok }

// MaxRequestVersion returns the highest request version of key that can be
// checked, or -1 when none can.
func MaxRequestVersion(key int16) int16 {
	hi := int16(-1)
	for _, v := range requests[key].variants {
		hi = max(hi, v.versions.hi)
	}
	return hi
}

type kind uint8

const (
	kInt8  kind = iota + 1 // int8, bool
	kInt16                 // int16, uint16
	kInt32                 // int32, uint32
	kInt64                 // int64, float64
	kUUID
	kString
	kBytes // bytes, records
	kArray
	kStruct
)

// fixedSize is the wire size of a fixed-size kind, 0 for the others.
var fixedSize = [...]int{kInt8: 1, kInt16: 2, kInt32: 4, kInt64: 8, kUUID: 16, kStruct: 0}

// verRange is an inclusive range of versions; none is empty.
type verRange struct{ lo, hi int16 }

var none = verRange{1, 0}

func (r verRange) has(v int16) bool { return v >= r.lo && v <= r.hi }

// field is one field of a message or struct, as Kafka's message
// definitions describe it.
type field struct {
	name     string
	kind     kind
	elem     kind // the element kind of an array
	versions verRange
	nullable verRange
	tagged   verRange
	tag      uint32
	members  *[]field // kStruct, and arrays of kStruct
	// strayAsFirst has bit v set when kmsg, at message version v, where
	// Kafka does not define this tagged field, decodes it anyway with the
	// layout of the field's first tagged version (stray_gen.go, measured
	// from kmsg's own encoding by TestStrayCalibration).
	strayAsFirst uint64
}

// variant is one definition of a message, valid for a range of versions.
type variant struct {
	versions verRange
	flexible verRange
	fields   *[]field
}

type api struct {
	name     string
	variants []variant
}

func lookup(apis map[int16]api, key, version int16) (variant, bool) {
	for _, v := range apis[key].variants {
		if v.versions.has(version) {
			return v, true
		}
	}
	return variant{}, false
}

// check walks body and returns where the walk ended (decoders ignore what
// follows; tests check that nothing does).
func check(apis map[int16]api, request bool, key, version int16, body []byte, hooks *walker) (int, error) {
	v, ok := lookup(apis, key, version)
	if !ok {
		dir := "response"
		if request {
			dir = "request"
		}
		return 0, fmt.Errorf("api key %d v%d %s: %w", key, version, dir, ErrUnknownVersion)
	}
	w := walker{body: body, version: version, flexible: v.flexible.has(version)}
	if hooks != nil {
		w.onStray, w.onUnknown = hooks.onStray, hooks.onUnknown
	}
	end, err := w.structure(*v.fields, 0, len(body))
	if err != nil {
		err.API, err.Key, err.Version, err.Request, err.Size = apis[key].name, key, version, request, len(body)
		return end, err
	}
	return end, nil
}

// walker walks one body. Every loop it runs is bounded by the bytes it
// consumes: counts are checked against the bytes left (times the least
// size of an element) before anything is iterated, so a walk costs
// O(len(body)) whatever the body says.
type walker struct {
	body     []byte
	version  int16
	flexible bool
	structs  int64 // struct elements of arrays so far
	// onStray and onUnknown, in tests, learn of each stray tag about to be
	// renumbered (its field and its content's span) and each tag no
	// version of the struct defines.
	onStray   func(f *field, pos, end int)
	onUnknown func(tag uint32)
}

// walkAs walks one value of field f in body[pos:end] as at version
// version, and returns where that walk ended.
func (w *walker) walkAs(f *field, version int16, pos, end int) (int, *MalformedError) {
	sub := walker{body: w.body, version: version, flexible: true, structs: w.structs, onStray: w.onStray, onUnknown: w.onUnknown}
	next, err := sub.value(f, f.kind, false, pos, end)
	w.structs = sub.structs
	return next, err
}

func fail(pos int, format string, args ...any) *MalformedError {
	return &MalformedError{Offset: pos, Reason: fmt.Sprintf(format, args...)}
}

// structure walks the fields of a struct in body[pos:end] and returns the
// position after it.
func (w *walker) structure(fields []field, pos, end int) (int, *MalformedError) {
	var err *MalformedError
	for i := range fields {
		f := &fields[i]
		if !f.versions.has(w.version) || (w.flexible && f.tagged.has(w.version)) {
			continue
		}
		if pos, err = w.value(f, f.kind, false, pos, end); err != nil {
			return pos, err
		}
	}
	if w.flexible {
		return w.tags(fields, pos, end)
	}
	return pos, nil
}

// tags walks a tagged-field section. Known tags are walked inside their
// own size, as a decoder reads them.
//
// A tag this struct defines at other versions only is a stray: kmsg
// decodes every tag it knows at every flexible version, and the layout it
// reads inside such a tag is its own (sometimes the field's first version,
// sometimes the message's), which Kafka's definitions cannot tell. Rather
// than guess, the stray's number is rewritten in place to one the struct
// never defines, so that a decoder keeps its bytes as an unknown tag and
// never looks inside. Kafka defines no meaning for it at this version, so
// no reader loses anything it could use.
func (w *walker) tags(fields []field, pos, end int) (int, *MalformedError) {
	n, pos, ok := w.uvarint(pos, end)
	if !ok {
		return pos, fail(pos, "tagged field count: bad or truncated varint")
	}
	// A tagged field takes at least two bytes: its tag and its size.
	if int64(n)*2 > int64(end-pos) {
		return pos, fail(pos, "tagged field count %d exceeds the %d bytes left", n, end-pos)
	}
	for range n {
		var tag, size uint32
		tagAt := pos
		if tag, pos, ok = w.uvarint(pos, end); !ok {
			return pos, fail(pos, "tag: bad or truncated varint")
		}
		tagLen := pos - tagAt
		if size, pos, ok = w.uvarint(pos, end); !ok {
			return pos, fail(pos, "tagged field size: bad or truncated varint")
		}
		if int64(size) > int64(end-pos) {
			return pos, fail(pos, "tagged field %d of %d bytes exceeds the %d bytes left", tag, size, end-pos)
		}
		known := false
		for i := range fields {
			f := &fields[i]
			if f.tag != tag || f.tagged.lo > f.tagged.hi {
				continue
			}
			known = true
			switch {
			case f.tagged.has(w.version) && f.versions.has(w.version):
				if _, err := w.value(f, f.kind, false, pos, pos+int(size)); err != nil {
					return pos, err
				}
			case w.version >= 0 && w.version < 64 && f.strayAsFirst&(1<<w.version) != 0:
				// kmsg decodes it as at the field's first version: so
				// is it walked.
				if _, err := w.walkAs(f, f.tagged.lo, pos, pos+int(size)); err != nil {
					return pos, err
				}
			default:
				if w.onStray != nil {
					w.onStray(f, pos, pos+int(size))
				}
				putUvarintN(w.body[tagAt:tagAt+tagLen], unusedTag(fields, tagLen))
			}
			break
		}
		if !known && w.onUnknown != nil {
			w.onUnknown(tag)
		}
		pos += int(size)
	}
	return pos, nil
}

// unusedTag returns a tag number that no field of the struct defines at any
// version and whose varint takes n bytes.
func unusedTag(fields []field, n int) uint32 {
	lo := uint32(0)
	if n > 1 {
		lo = 1 << (7 * (n - 1))
	}
	hi := uint32(1<<(7*min(n, 4))) - 1
	if n >= 5 {
		hi = ^uint32(0)
	}
	for t := hi; t > lo; t-- {
		used := false
		for i := range fields {
			used = used || (fields[i].tag == t && fields[i].tagged.lo <= fields[i].tagged.hi)
		}
		if !used {
			return t
		}
	}
	return lo
}

// putUvarintN writes v as an unsigned varint of exactly len(b) bytes; v
// must take that many.
func putUvarintN(b []byte, v uint32) {
	for i := range b {
		c := byte(v & 0x7f)
		v >>= 7
		if i < len(b)-1 {
			c |= 0x80
		}
		b[i] = c
	}
}

// value walks one value of kind k: the field's own kind, or its element
// kind inside an array (elem), whose elements are never null.
func (w *walker) value(f *field, k kind, elem bool, pos, end int) (int, *MalformedError) {
	switch k {
	case kInt8, kInt16, kInt32, kInt64, kUUID:
		if n := fixedSize[k]; end-pos < n {
			return pos, fail(pos, "%s needs %d bytes, %d left", f.name, n, end-pos)
		}
		return pos + fixedSize[k], nil
	case kString, kBytes:
		l, next, err := w.length(f, k, pos, end)
		if err != nil {
			return pos, err
		}
		if l < 0 {
			// Null: allowed for nullable strings; a decoder reads a null
			// non-nullable bytes field as empty, so that passes too.
			if k == kString && (elem || !f.nullable.has(w.version)) {
				return pos, fail(pos, "%s is null but not nullable in this version", f.name)
			}
			return next, nil
		}
		if l > int64(end-next) {
			return pos, fail(pos, "%s of %d bytes exceeds the %d bytes left", f.name, l, end-next)
		}
		return next + int(l), nil
	case kArray:
		n, next, err := w.length(f, k, pos, end)
		if err != nil {
			return pos, err
		}
		if n < 0 {
			return next, nil // null: a decoder reads it as empty when not nullable
		}
		least := int64(w.leastSize(f, f.elem))
		if n*least > int64(end-next) {
			return pos, fail(pos, "%s count %d exceeds the %d bytes left (%d bytes or more each)", f.name, n, end-next, least)
		}
		if f.elem == kStruct {
			// A decoder allocates a struct of 50 to 200 bytes per
			// element, which can take as few as two bytes on the wire.
			if w.structs += n; w.structs > MaxStructElements {
				return pos, fail(pos, "more than %d struct elements (%s)", MaxStructElements, f.name)
			}
		}
		pos = next
		for range n {
			if pos, err = w.value(f, f.elem, true, pos, end); err != nil {
				return pos, err
			}
		}
		return pos, nil
	case kStruct:
		if !elem && f.nullable.has(w.version) {
			// A nullable struct is preceded by a presence byte: Kafka
			// writes -1 for null and 1 for present. Readers disagree on
			// the rest (Kafka reads any negative byte as null, kmsg only
			// -1), so anything else is refused rather than guessed.
			if end-pos < 1 {
				return pos, fail(pos, "%s presence needs 1 byte, 0 left", f.name)
			}
			switch int8(w.body[pos]) {
			case -1:
				return pos + 1, nil
			case 1:
				pos++
			default:
				return pos, fail(pos, "%s presence byte %d is neither -1 (null) nor 1", f.name, int8(w.body[pos]))
			}
		}
		return w.structure(*f.members, pos, end)
	}
	return pos, fail(pos, "%s has an unknown kind %d", f.name, k)
}

// length reads the length prefix of a value of kind k (a string, bytes or
// an array): -1 is null; any other negative length is an error.
func (w *walker) length(f *field, k kind, pos, end int) (int64, int, *MalformedError) {
	var l int64
	next := pos
	switch {
	case w.flexible:
		u, p, ok := w.uvarint(pos, end)
		if !ok {
			return 0, pos, fail(pos, "%s length: bad or truncated varint", f.name)
		}
		l, next = int64(u)-1, p
	case k == kString:
		if end-pos < 2 {
			return 0, pos, fail(pos, "%s length needs 2 bytes, %d left", f.name, end-pos)
		}
		l, next = int64(int16(binary.BigEndian.Uint16(w.body[pos:]))), pos+2
	default:
		if end-pos < 4 {
			return 0, pos, fail(pos, "%s length needs 4 bytes, %d left", f.name, end-pos)
		}
		l, next = int64(int32(binary.BigEndian.Uint32(w.body[pos:]))), pos+4
	}
	if l < -1 {
		return 0, pos, fail(pos, "%s has a negative length %d", f.name, l)
	}
	return l, next, nil
}

func (w *walker) uvarint(pos, end int) (uint32, int, bool) {
	v, n := kbin.Uvarint(w.body[pos:end])
	if n <= 0 {
		return 0, pos, false
	}
	return v, pos + n, true
}

// leastSize is the fewest bytes one element of kind k can take in this
// version; at least 1, so that no count of empty elements is believed.
func (w *walker) leastSize(f *field, k kind) int {
	if k == kStruct {
		return max(1, w.leastStruct(*f.members, 0))
	}
	return max(1, w.leastOf(k))
}

func (w *walker) leastOf(k kind) int {
	switch k {
	case kString, kBytes, kArray:
		if w.flexible {
			return 1
		}
		if k == kString {
			return 2
		}
		return 4
	}
	return fixedSize[k]
}

// leastStruct is the fewest bytes a struct can take: its fixed fields,
// its length prefixes and its tag section. depth stops at schemas that
// nest too deep to matter (none of Kafka's do).
func (w *walker) leastStruct(fields []field, depth int) int {
	n := 0
	if w.flexible {
		n++ // the tagged-field count
	}
	for i := range fields {
		f := &fields[i]
		if !f.versions.has(w.version) || (w.flexible && f.tagged.has(w.version)) {
			continue
		}
		if f.kind == kStruct && f.nullable.has(w.version) {
			n++ // the presence byte of a null struct
			continue
		}
		if f.kind == kStruct && depth < 8 {
			n += w.leastStruct(*f.members, depth+1)
			continue
		}
		n += w.leastOf(f.kind)
	}
	return n
}
