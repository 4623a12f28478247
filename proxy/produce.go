package proxy

// Produce: v3-13 (every version kmsg knows).
//   * v10+: CurrentLeader and NodeEndpoints in responses (KIP-951),
//           translated; earlier responses pass through untouched.
//   * v13+: topic ids (request and response), translated.
// Requests before v13 are forwarded as bytes; only acks is read, because an
// acks=0 Produce gets no response and must not be waited for.

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceAcks reads the acks field of a Produce request body.
func produceAcks(body []byte, version int16) (int16, error) {
	b := kbin.Reader{Src: body}
	if version >= 3 {
		req := kmsg.ProduceRequest{Version: version}
		if req.IsFlexible() {
			b.CompactNullableString()
		} else {
			b.NullableString()
		}
	}
	acks := b.Int16()
	if !b.Ok() {
		return 0, fmt.Errorf("produce v%d request too short for acks", version)
	}
	return acks, nil
}
