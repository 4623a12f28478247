package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAPIShapesMatchKmsg: the precomputed table answers as kmsg does for
// every key and version (flexibility is a threshold in every API).
func TestAPIShapesMatchKmsg(t *testing.T) {
	for key := int16(-1); key < 200; key++ {
		req := kmsg.RequestForKey(key)
		sh := shapeOf(key)
		if (req != nil) != sh.known {
			t.Fatalf("key %d: known %v, kmsg %v", key, sh.known, req != nil)
		}
		if req == nil {
			continue
		}
		if sh.maxVersion != req.MaxVersion() {
			t.Errorf("key %d: max version %d, kmsg %d", key, sh.maxVersion, req.MaxVersion())
		}
		for v := int16(0); v <= req.MaxVersion()+2; v++ {
			req.SetVersion(v)
			if got, want := isFlexible(key, v), req.IsFlexible(); got != want {
				t.Errorf("key %d v%d: flexible %v, kmsg %v", key, v, got, want)
			}
		}
	}
}
