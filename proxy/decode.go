package proxy

// Decoding client requests and upstream responses with kmsg, only after
// wirecheck has walked them.
//
// kmsg trusts the counts it reads (a tagged-field count of 2^32-1 in a
// ten-byte request loops for a minute), so no byte from a client or a
// broker reaches kmsg's ReadFrom without a bounded walk first. The reader
// walks every request it will forward with a known key and version once,
// on arrival (readLoop), and marks the header Checked; the decoders below
// are the only places that call ReadFrom (TestDecodesAreWalked holds the
// package to that).

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/wirecheck"
)

// decodeRequest decodes a client request body into req (any kmsg request of
// hdr's key). The body was walked on arrival when hdr.Checked; otherwise it
// is walked here.
func decodeRequest(req kmsg.Request, hdr requestHeader, body []byte) error {
	if !hdr.Checked {
		if err := wirecheck.Request(hdr.Key, hdr.Version, body); err != nil {
			return err
		}
	}
	req.SetVersion(hdr.Version)
	if err := req.ReadFrom(body); err != nil {
		return fmt.Errorf("decode %s v%d request: %w", apiName(hdr.Key), hdr.Version, err)
	}
	return nil
}

// decodeResponse decodes a response body (after its header) of the given
// key and version into resp, after walking it.
func decodeResponse(resp kmsg.Response, key, version int16, body []byte) error {
	if err := wirecheck.Response(key, version, body); err != nil {
		return err
	}
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return fmt.Errorf("decode %s v%d response: %w", apiName(key), version, err)
	}
	return nil
}
