// Package wirecheck checks that the body of a Kafka request or response
// fits its message definition before anything decodes it.
//
// Decoders trust the counts they read: kmsg (v1.15) loops over a tagged
// field count without checking that bytes remain, so a ten-byte request
// that declares 2^32-1 tags holds a core for a minute, and a count of
// array elements is only checked against one byte per element, so a small
// frame can make a decoder allocate far more than it holds. Walk first with
// Request or Response, and decode only what passes: the walk allocates
// nothing, checks every length, array count and tag count against the
// bytes left (an element against the fewest bytes it can take), walks known
// tagged fields inside their own size, and costs O(len(body)) whatever the
// body declares.
//
// The schema is generated (schema_gen.go, by internal/gen through
// generate.sh) from Apache Kafka's own message definitions, the JSON files
// shipped in the kafka-clients jar: versions Kafka 4 still defines from
// 4.x, the versions it removed from the last 3.x release. A key and version
// it has no definition for is reported as ErrUnknownVersion: callers must
// then not decode the body either.
//
// kmsg decodes a tagged field it knows at every flexible version, also
// where Kafka does not define it. Such a stray is walked the way kmsg reads
// it where that is measured to be the field's first tagged version
// (stray_gen.go, from kmsg's own encoding); elsewhere its tag number is
// rewritten in place to one the struct never uses, so that kmsg keeps its
// bytes undecoded. A walk may therefore change the body: walk the bytes
// that will be decoded, not a copy. Messages of more than MaxStructElements
// struct elements are refused before a decoder allocates them.
package wirecheck
