package kafkasec

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/wirecheck"
)

// Security is a built Config: what connects to one cluster.
type Security struct {
	cluster string
	cfg     Config
	tlsOpts []tlsfiles.Option
	// tlsByHost holds a client TLS configuration per broker host (host →
	// *tls.Config): the name verified is the host dialled, which the
	// handshake does not carry for an IP address. Empty without TLS.
	tlsByHost sync.Map
	mech      sasl.Mechanism // nil: no SASL
}

// New builds the settings for the cluster named cluster (used in errors).
// cfg must have passed Validate. Nothing is dialled.
func New(ctx context.Context, cluster string, cfg Config, opts ...tlsfiles.Option) (*Security, error) {
	cfg.Normalize()
	s := &Security{cluster: cluster, cfg: cfg, tlsOpts: opts}
	if cfg.TLS.Enabled {
		// Load the files now, so that a broken one fails here.
		if _, err := tlsfiles.ClientConfig(cfg.TLS.files(), opts...); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cluster, err)
		}
	}
	m, err := mechanism(ctx, cfg.SASL)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	s.mech = m
	return s, nil
}

// Config returns the settings s was built from.
func (s *Security) Config() Config { return s.cfg }

// SASL reports whether connections authenticate with SASL.
func (s *Security) SASL() bool { return s.mech != nil }

// KgoOpts returns the franz-go options connecting to the cluster (franz-go
// re-authenticates its own connections, KIP-368).
//
// Every connection is a wirecheck.Conn: the client sees a broker's
// response only after it has been walked against its definition, because
// kmsg, which franz-go decodes with, trusts the counts it reads (a
// response declaring 2^32-1 tagged fields would hold a core for a minute).
// dialTimeout bounds the TCP connection (0: franz-go's default, 10 s); a
// dialer replaces franz-go's kgo.DialTimeout.
func (s *Security) KgoOpts(dialTimeout time.Duration) []kgo.Opt {
	if dialTimeout <= 0 {
		dialTimeout = 10 * time.Second
	}
	opts := []kgo.Opt{kgo.Dialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if s.cfg.TLS.Enabled {
			if nc, err = s.handshake(ctx, nc, addr); err != nil {
				return nil, err
			}
		}
		return wirecheck.NewConn(nc, maxKgoResponse), nil
	})}
	if s.mech != nil {
		opts = append(opts, kgo.SASL(s.mech))
	}
	return opts
}

// maxKgoResponse bounds a response to the franz-go clients: franz-go's own
// default (kgo.BrokerMaxReadBytes).
const maxKgoResponse = 100 << 20

// Conn is a raw connection to one broker, authenticated as s says.
type Conn struct {
	net.Conn
	addr string
	// reauthAt is when the SASL session should be renewed (zero: never,
	// the broker set no session lifetime).
	reauthAt time.Time
}

// ReauthDue reports whether the session must be renewed before the next
// request: KIP-368 brokers close a connection whose session expired when
// the next request arrives. Without a session lifetime it does not read
// the clock (the proxy asks before every request).
func (c *Conn) ReauthDue() bool {
	return !c.reauthAt.IsZero() && c.dueAt(time.Now())
}

func (c *Conn) dueAt(now time.Time) bool { return !c.reauthAt.IsZero() && !now.Before(c.reauthAt) }

// ReauthAt is when the session should be renewed (zero: never).
func (c *Conn) ReauthAt() time.Time { return c.reauthAt }

// Dial connects to the broker at addr: TCP within timeout, the TLS
// handshake, the SASL exchange. Errors name the cluster, the broker and
// the step that failed, never a credential.
func (s *Security) Dial(ctx context.Context, addr string, timeout time.Duration) (*Conn, error) {
	return s.dial(ctx, addr, timeout, true)
}

// DialTLS connects like Dial but leaves SASL to whoever uses the
// connection (a client authenticating through the proxy itself).
func (s *Security) DialTLS(ctx context.Context, addr string, timeout time.Duration) (*Conn, error) {
	return s.dial(ctx, addr, timeout, false)
}

func (s *Security) dial(ctx context.Context, addr string, timeout time.Duration, authenticate bool) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster %s broker %s: dial: %w", s.cluster, addr, err)
	}
	if s.cfg.TLS.Enabled {
		if nc, err = s.handshake(ctx, nc, addr); err != nil {
			return nil, err
		}
	}
	c := &Conn{Conn: nc, addr: addr}
	if s.mech != nil && authenticate {
		if err := s.authenticate(ctx, c); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// handshake runs the TLS handshake on nc, closing it on failure.
func (s *Security) handshake(ctx context.Context, nc net.Conn, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	cfg, err := s.tlsFor(host)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster %s broker %s: %w", s.cluster, addr, err)
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster %s broker %s: TLS handshake: %w", s.cluster, addr, err)
	}
	return tc, nil
}

func (s *Security) tlsFor(host string) (*tls.Config, error) {
	if c, ok := s.tlsByHost.Load(host); ok {
		return c.(*tls.Config), nil
	}
	cfg, err := tlsfiles.ClientConfig(s.cfg.TLS.files().ForAddr(host), s.tlsOpts...)
	if err != nil {
		return nil, err
	}
	c, _ := s.tlsByHost.LoadOrStore(host, cfg)
	return c.(*tls.Config), nil
}

// Reauthenticate renews c's SASL session on the same connection (KIP-368).
// The caller guarantees that no request is in flight on c and that none is
// written until it returns.
func (s *Security) Reauthenticate(ctx context.Context, c *Conn, timeout time.Duration) error {
	if s.mech == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.authenticate(ctx, c)
}

// clientID is sent in the proxy's own SASL requests.
const clientID = "switchyard"

// authenticate runs SaslHandshake v1 and SaslAuthenticate v1 (both kept by
// Kafka 4.x, which dropped v0) on c.
func (s *Security) authenticate(ctx context.Context, c *Conn) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("cluster %s broker %s: SASL %s %s: %w", s.cluster, c.addr, s.mech.Name(), step,
			scrub(err, s.cfg.SASL.secrets()...))
	}
	if dl, ok := ctx.Deadline(); ok {
		c.Conn.SetDeadline(dl)
		defer c.Conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.Conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = s.mech.Name()
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	if err := roundTrip(c.Conn, 1, hs, hsResp); err != nil {
		if errors.Is(err, errBrokerClosed) {
			err = fmt.Errorf("%w (a listener without SASL, or TLS expected?)", err)
		}
		return fail("handshake", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return fail("handshake", fmt.Errorf("%w (the broker enables %v)", err, hsResp.SupportedMechanisms))
	}

	session, msg, err := s.mech.Authenticate(ctx, c.addr)
	if err != nil {
		return fail("start", err)
	}
	started := time.Now()
	var lifetime int64
	corr := int32(2)
	for done := false; !done || len(msg) > 0; corr++ {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version = 1
		req.SASLAuthBytes = msg
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		if err := roundTrip(c.Conn, corr, req, resp); err != nil {
			if errors.Is(err, errBrokerClosed) {
				err = fmt.Errorf("%w during the exchange (wrong credentials?)", err)
			}
			return fail("authenticate", err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			if resp.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", err, *resp.ErrorMessage)
			}
			return fail("authentication", err)
		}
		lifetime = resp.SessionLifetimeMillis
		msg = nil
		if !done {
			if done, msg, err = session.Challenge(resp.SASLAuthBytes); err != nil {
				return fail("challenge", err)
			}
		}
	}
	c.reauthAt = time.Time{}
	if lifetime > 0 {
		l := time.Duration(lifetime) * time.Millisecond
		// Renew with a margin of a tenth of the lifetime (at least a
		// second): franz-go uses 2-5%, but a proxied connection must first
		// wait for its in-flight requests, long polls included.
		c.reauthAt = started.Add(l - max(l/10, time.Second))
	}
	return nil
}

// errBrokerClosed: the broker closed the connection instead of answering.
var errBrokerClosed = errors.New("the broker closed the connection")

// roundTrip writes one request (header v1: no tags; both SASL keys are
// non-flexible at v1) and reads its response into resp.
func roundTrip(nc net.Conn, corr int32, req kmsg.Request, resp kmsg.Response) error {
	body := req.AppendTo(nil)
	frame := make([]byte, 0, 4+2+2+4+2+len(clientID)+len(body))
	frame = binary.BigEndian.AppendUint32(frame, 0)
	frame = binary.BigEndian.AppendUint16(frame, uint16(req.Key()))
	frame = binary.BigEndian.AppendUint16(frame, uint16(req.GetVersion()))
	frame = binary.BigEndian.AppendUint32(frame, uint32(corr))
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(clientID)))
	frame = append(frame, clientID...)
	frame = append(frame, body...)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	if _, err := nc.Write(frame); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var size [4]byte
	if _, err := io.ReadFull(nc, size[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return errBrokerClosed
		}
		return fmt.Errorf("read: %w", err)
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 1<<20 {
		return fmt.Errorf("response of %d bytes: not a SASL response (is this a TLS listener?)", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(nc, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if got := int32(binary.BigEndian.Uint32(buf)); got != corr {
		return fmt.Errorf("response correlation id %d, want %d", got, corr)
	}
	// Walked before decoding: a broker, or anyone in the middle of a
	// plaintext connection, decides these bytes (wirecheck).
	if err := wirecheck.Response(req.Key(), req.GetVersion(), buf[4:]); err != nil {
		return err
	}
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(buf[4:]); err != nil {
		return fmt.Errorf("decode %T: %w", resp, err)
	}
	return nil
}
