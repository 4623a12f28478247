package proxy

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

func saslHandshake(mech string) *kmsg.SASLHandshakeRequest {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version = 1
	req.Mechanism = mech
	return req
}

func saslAuthenticate(auth string) *kmsg.SASLAuthenticateRequest {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version = 2
	req.SASLAuthBytes = []byte(auth)
	return req
}

// plainLogin runs a PLAIN handshake and authentication and returns the
// authentication's error code and message.
func plainLogin(w *wireConn, user, pw string) (*kerr.Error, string) {
	w.t.Helper()
	hs := w.roundTrip(saslHandshake("PLAIN")).(*kmsg.SASLHandshakeResponse)
	if err := kerr.ErrorForCode(hs.ErrorCode); err != nil {
		w.t.Fatalf("handshake: %v", err)
	}
	resp := w.roundTrip(saslAuthenticate("\x00" + user + "\x00" + pw)).(*kmsg.SASLAuthenticateResponse)
	var msg string
	if resp.ErrorMessage != nil {
		msg = *resp.ErrorMessage
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err.(*kerr.Error), msg
	}
	return nil, msg
}

// TestPreAuthFrameLimit: with client SASL terminated, a frame larger than
// clientAuth.maxPreAuthFrameBytes (512 KiB) before authentication closes
// the connection unread, whatever the request; the same frame after
// authentication is served.
func TestPreAuthFrameLimit(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 1)
	topic := kafkatest.Topic(t, "preauth")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) {
		c.ClientAuth.Mode = ClientAuthTerminate
		c.ClientAuth.UsersFile = usersFile(t, map[string]string{"app": "app-pw"})
	})
	big := strings.Repeat("x", 600<<10)
	bigAPIVersions := func() kmsg.Request {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = 3
		req.ClientSoftwareName, req.ClientSoftwareVersion = big, "1.0"
		return req
	}
	for _, tc := range []struct {
		name   string
		before []kmsg.Request
		big    kmsg.Request
	}{
		{"apiversions-first", nil, bigAPIVersions()},
		{"authenticate", []kmsg.Request{saslHandshake("PLAIN")}, saslAuthenticate("\x00app\x00" + big)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := connErrorsByReason(t, tp.reg)
			w := dialWire(t, tp.Addr().String(), "preauth")
			for _, r := range tc.before {
				w.roundTrip(r)
			}
			w.corr++
			// The proxy may close before the frame is all written.
			w.nc.Write(w.f.AppendRequest(nil, tc.big, w.corr))
			w.expectClosed()
			waitOneConnError(t, tp.reg, before, "preauth_frame_too_large")
		})
	}
	t.Run("after-authentication", func(t *testing.T) {
		before := connErrorsByReason(t, tp.reg)
		w := dialWire(t, tp.Addr().String(), "authed")
		if err, msg := plainLogin(w, "app", "app-pw"); err != nil {
			t.Fatalf("login: %v %s", err, msg)
		}
		if r := w.roundTrip(bigAPIVersions()).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 || len(r.ApiKeys) == 0 {
			t.Fatalf("600 KiB ApiVersions after authentication: error %d, %d keys", r.ErrorCode, len(r.ApiKeys))
		}
		resp := w.roundTrip(rawProduce(9, -1, topic, [16]byte{}, big)).(*kmsg.ProduceResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("600 KiB Produce after authentication: %v", kerr.ErrorForCode(code))
		}
		assertNoConnErrorsSince(t, tp.reg, before)
	})
}
