package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/wirecheck"
)

// clientConn is one client connection and the upstream connection it is
// currently bound to.
//
// Two goroutines serve it, sharing one errgroup: the reader takes requests
// from the client, admits them (gates, switches), forwards them and queues
// what the writer must answer in request order; the writer answers each
// queued entry, reading the upstream response or writing a response the
// proxy made itself. Kafka answers in order per connection, so the queue
// is all the matching that is needed. Either goroutine failing closes the
// connection and nothing else.
type clientConn struct {
	p     *Proxy
	nc    net.Conn
	vnode int32 // -1 for the bootstrap listener
	log   *zap.Logger

	pending chan *pendingReq
	// slots holds one token per request forwarded upstream and not yet
	// answered (MaxInflightPerConnection): the reader stops reading the
	// client while it is full.
	slots chan struct{}

	inflight      atomic.Int64 // admitted and not yet answered
	inflightFetch atomic.Int64 // the long polls among them (isLongPoll)
	held          atomic.Int64 // parked by a gate or a switch
	lastAnswered  atomic.Int64 // unix nanos of the last request finished or response written; idleness counts from it

	closeOnce sync.Once

	curMu sync.Mutex
	cur   *upConn // the upstream connection in use; nil before the first request
	// links are the connections to the other brokers of cur's cluster
	// that Produce partitions were routed to (route.go), by node id.
	links map[int32]*upConn
	// linkFailed: when a link's dial last failed, by node id (reader only).
	linkFailed map[int32]time.Time
	// wlinks are the writer's own connections, by node id, for re-sending
	// refused Produce partitions (resend.go).
	wlinks map[int32]*upConn
	// fetches: routed fetches' links and answers (fetchroute.go); nil
	// until the first (guarded by curMu).
	fetches *fetchRouter
	// bg owns the fetch links' reader goroutines; serve waits for them.
	bg sync.WaitGroup
	// closed: close ran (guarded by curMu, like the links).
	closed bool
	// retiredBelow: upstream generations below it were abandoned by a
	// switch (guarded by curMu); no writer link is dialled for them.
	retiredBelow uint64

	// fence: where each partition's last routed Produce batch went
	// (resend.go; reader only). routedSeq numbers the routed Produce
	// requests that expect an answer (reader only); answeredSeq is the
	// number of the last one answered (written by the writer).
	fence        map[fenceKey]*fenceEntry
	routeScratch []partRoute // routeProduce's, reused
	routedSeq    uint64
	answeredSeq  atomic.Uint64
	// frameKept: the last request frame read is kept by its queue entry
	// (a routed Produce, for re-sends): the reader reads the next into
	// another buffer. freeFrames holds such buffers given back.
	frameKept  bool
	freeFrames chan []byte

	// Owned by the reader goroutine.
	auth              clientSASL
	staleFetchSession bool // the upstream changed; the client's fetch session is unknown there
	// sentConsumerHeartbeat: the client sent a ConsumerGroupHeartbeat
	// here, so its group commits on this connection are a KIP-848
	// member's (groupMembers).
	sentConsumerHeartbeat bool
	// librdkafka: the client named itself librdkafka, or a library built
	// on it, in ApiVersions (v3+ ClientSoftwareName); groupMembers answers
	// it differently.
	librdkafka bool
	// fetchTopics are the topics of the client's fetch session on this
	// connection (usage.go).
	fetchTopics []*topicUse
	// gateAnswered holds, per API key, the outcome of a held request this
	// connection had answered with a retriable error; later gated requests
	// of the key are answered the same way until one is admitted (admit).
	gateAnswered map[int16]string
}

// upConn is a connection to one broker of one upstream cluster.
type upConn struct {
	nc  net.Conn
	sc  *kafkasec.Conn // nc, with its SASL session
	u   *upstream
	gen uint64
	// orphan: the client's virtual broker has no broker of u behind it (u
	// has fewer brokers than a cluster before); nc reaches broker node (-1:
	// a bootstrap address), which answers what any broker answers and the
	// requests for partitions it leads (orphanAnswer).
	orphan bool
	node   int32
	// abandoned is set by a switch before it closes nc: requests still in
	// flight on it are answered by the proxy (Fetch) or end the client
	// connection (anything else).
	abandoned atomic.Bool
	closeOnce sync.Once
	closed    atomic.Bool
	// lastUsed: unix nanos of the last request written to a link (route.go).
	lastUsed atomic.Int64
}

func (uc *upConn) close() {
	uc.closeOnce.Do(func() {
		uc.closed.Store(true)
		uc.nc.Close()
	})
}

func (uc *upConn) isClosed() bool { return uc.closed.Load() }

// pendingReq is one entry of a connection's response queue.
type pendingReq struct {
	hdr   requestHeader
	up    *upConn // the response comes from here; nil for local responses
	local []byte  // a complete response frame made by the proxy
	sent  time.Time
	// InitProducerId only: the presented id being re-initialised (-1: none),
	// and whether the producer is transactional.
	prevProducerID int64
	transactional  bool
	// member: see rewritten.member.
	member *memberNote
	// seqs: see rewritten.seqs.
	seqs *produceSeqs
	// txn: a transactional request (txn.go), followed into its response.
	txn *txnNote
	// split: a Produce sent in parts to several brokers (route.go); up is
	// the first of them.
	split *requestSplit
	// resend: a routed Produce's request, kept so that partitions refused
	// by a broker that no longer leads them can be sent again (resend.go).
	resend *produceResend
	// seq: a routed Produce's number for the fence (resend.go), 0 if none.
	seq uint64
	// stable: the connection's partition requests are routed by leader,
	// so its client is shown stable leaders (vleaders.go).
	stable bool
	// fetch: a routed Fetch (fetchroute.go): the writer sends it to the
	// partitions' leaders and gathers the answers; nothing was written to up.
	fetch *fetchPlan
	// reauth, when set, asks the writer to renew this upstream connection's
	// SASL session and report to reauthDone.
	reauth     *upConn
	reauthDone chan<- error
	// closeAfter ends the connection once local is written (a failed
	// authentication).
	closeAfter bool
	// closeUp, when set, marks the end of an upstream connection's use: the
	// writer closes it once every earlier response has been read.
	closeUp *upConn
}

func (p *Proxy) newClientConn(nc net.Conn, vnode int32) *clientConn {
	return &clientConn{
		p:       p,
		nc:      nc,
		vnode:   vnode,
		log:     p.log.With(zap.String("client", nc.RemoteAddr().String()), zap.Int32("node", vnode)),
		pending: make(chan *pendingReq, max(256, p.cfg.MaxInflightPerConnection)),
		slots:   make(chan struct{}, p.cfg.MaxInflightPerConnection),
		// A producer keeps a few batches in flight (5 by default in the
		// Java client): their buffers are reused, more are left to the GC.
		freeFrames: make(chan []byte, 8),
	}
}

// close closes the client connection and its upstream; safe to call more
// than once and from any goroutine.
func (c *clientConn) close() {
	c.closeOnce.Do(func() {
		c.nc.Close()
		c.curMu.Lock()
		c.closed = true
		if c.cur != nil {
			c.cur.close()
		}
		for _, l := range c.links {
			l.close()
		}
		for _, l := range c.wlinks {
			l.close()
		}
		c.curMu.Unlock()
		c.closeFetchLinks(false)
	})
}

// serve runs the connection until the client or the upstream closes it, a
// fault occurs, or ctx is cancelled. It closes the connection.
func (c *clientConn) serve(ctx context.Context) {
	g, gctx := errgroup.WithContext(ctx)
	// Closing the sockets is what unblocks the two loops' reads and
	// writes; AfterFunc does it without a goroutine per connection.
	stop := context.AfterFunc(gctx, c.close)
	defer stop()
	g.Go(func() (err error) {
		defer c.recoverFault(&err)
		return c.readLoop(gctx)
	})
	g.Go(func() (err error) {
		defer c.recoverFault(&err)
		return c.writeLoop(gctx)
	})
	err := g.Wait()
	c.close()
	c.bg.Wait() // the fetch links' readers end with their closed links
	// Entries the writer never reached still count as in flight.
	for {
		select {
		case pr := <-c.pending:
			if pr.up != nil {
				c.doneInflight(pr.hdr.Key)
			}
			if pr.closeUp != nil {
				pr.closeUp.close() // replaced, and left to the writer
			}
			c.p.releaseSeqs(pr.seqs)
			continue
		default:
		}
		break
	}
	var fe *connFault
	if errors.As(err, &fe) {
		c.p.m.connClosed.WithLabelValues(fe.reason).Inc()
		switch {
		case ctx.Err() != nil:
		case fe.reason == "idle":
			c.log.Debug("closing idle client connection", zap.Error(fe.err))
		default:
			c.log.Warn("closing client connection", zap.String("reason", fe.reason), zap.Error(fe.err))
		}
	}
}

// connFault is an error that ends one connection, with a bounded reason
// for the connection_errors_total metric.
type connFault struct {
	reason string
	err    error
}

func (f *connFault) Error() string { return f.reason + ": " + f.err.Error() }
func (f *connFault) Unwrap() error { return f.err }

func fault(reason string, err error) error { return &connFault{reason: reason, err: err} }

// recoverFault turns a panic of one of the connection's goroutines into a
// fault that closes this connection only (reason "panic"), logged with its
// stack. It is the last resort, not the defence: input is walked before it
// is decoded (decode.go) and every patch is bounds-checked; a panic caught
// here is a bug to fix. Locks released by defer are released while the
// panic unwinds; the proxy holds none across a call that reads input.
func (c *clientConn) recoverFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	c.log.Error("recovered from a panic while serving a client connection; closing that connection",
		zap.Any("panic", r), zap.Stack("stack"))
	*err = fault("panic", fmt.Errorf("panic: %v", r))
}

// errClientGone ends a connection the client closed; it is not a fault.
var errClientGone = errors.New("client closed the connection")

func (c *clientConn) readLoop(ctx context.Context) error {
	var buf []byte
	r := &clientReader{c: c}
	for {
		if c.frameKept {
			// The last frame waits for its answer (a routed Produce):
			// the next is read into a buffer given back, or a new one.
			c.frameKept = false
			select {
			case buf = <-c.freeFrames:
			default:
				buf = nil
			}
		}
		frame, err := c.readRequest(r, buf)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), ctx.Err() != nil:
				return errClientGone
			case errors.Is(err, errIdle):
				return fault("idle", err)
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fault("client_timeout", fmt.Errorf("request not complete within %v (clientIOTimeout): %w", c.p.cfg.ClientIOTimeout, err))
			case errors.Is(err, errFrameTooLarge) && c.preAuth():
				return fault("preauth_frame_too_large", fmt.Errorf("%w before SASL authentication (clientAuth.maxPreAuthFrameBytes; maxFrameBytes applies once authenticated)", err))
			case errors.Is(err, errFrameTooLarge), errors.Is(err, errFrameNegative):
				return fault("frame_too_large", err)
			default:
				return fault("client_read", err)
			}
		}
		buf = frame[:0]
		hdr, err := parseRequestHeader(frame)
		if err != nil {
			return fault("bad_header", err)
		}
		if hdr.Known {
			// Walked once here, so that whatever decodes it later
			// (decode.go) costs bounded CPU. A broker closes the
			// connection on a request it cannot parse; so does the proxy.
			if err := wirecheck.Request(hdr.Key, hdr.Version, frame[hdr.BodyOffset:]); err != nil {
				return fault("malformed_request", err)
			}
			hdr.Checked = true
		}
		km := c.p.m.forKey(hdr.Key)
		km.requests.Inc()
		km.requestBytes.Add(float64(len(frame) + 4))

		if hdr.Key == keyApiVersions {
			c.noteSoftware(hdr, frame[hdr.BodyOffset:])
			resp, err := c.p.apiVersionsResponse(ctx, hdr, frame[hdr.BodyOffset:])
			if err != nil {
				return fault("api_versions", err)
			}
			if err := c.enqueue(ctx, &pendingReq{hdr: hdr, local: resp}); err != nil {
				return err
			}
			continue
		}

		if handled, err := c.handleClientAuth(ctx, hdr, frame[hdr.BodyOffset:]); err != nil {
			return err
		} else if handled {
			continue
		}

		adm, err := c.p.admit(ctx, c, hdr, frame[hdr.BodyOffset:])
		if err != nil {
			return errClientGone
		}
		if adm.reject {
			resp, err := rejectResponse(hdr, frame[hdr.BodyOffset:])
			if err != nil {
				return fault("reject", err)
			}
			if resp == nil { // acks=0 Produce: no response expected
				continue
			}
			if err := c.enqueue(ctx, &pendingReq{hdr: hdr, local: resp}); err != nil {
				return err
			}
			continue
		}
		// Admitted: inflight was raised by admit; forward lowers it on
		// every path that does not queue a response.
		if err := c.forward(ctx, hdr, frame, adm); err != nil {
			return err
		}
	}
}

// clientReader reads from the client, moving the read deadline from
// IdleTimeout (waiting for a request) to ClientIOTimeout once a request's
// first byte has arrived.
type clientReader struct {
	c       *clientConn
	started bool
}

func (r *clientReader) Read(b []byte) (int, error) {
	n, err := r.c.nc.Read(b)
	if n > 0 && !r.started {
		r.started = true
		r.c.nc.SetReadDeadline(time.Now().Add(r.c.p.cfg.ClientIOTimeout))
	}
	return n, err
}

// errIdle ends a connection that was silent for IdleTimeout.
var errIdle = errors.New("no request for the idle timeout")

// readRequest reads the next request frame. Silence while responses are
// still due is not idleness: the deadline is renewed then.
func (c *clientConn) readRequest(r *clientReader, buf []byte) ([]byte, error) {
	idleSince := time.Now()
	for {
		r.started = false
		c.nc.SetReadDeadline(idleSince.Add(c.p.cfg.IdleTimeout))
		frame, err := readFrame(r, c.frameLimit(), buf)
		if err != nil && !r.started && errors.Is(err, os.ErrDeadlineExceeded) {
			now := time.Now()
			if c.inflight.Load() > 0 || c.held.Load() > 0 {
				idleSince = now
				continue
			}
			// A response written since the deadline was set restarts the
			// count: the client may be about to send its next request.
			if last := time.Unix(0, c.lastAnswered.Load()); last.After(idleSince) {
				idleSince = last
				if now.Sub(idleSince) < c.p.cfg.IdleTimeout {
					continue
				}
			}
			return nil, fmt.Errorf("%w (%v)", errIdle, c.p.cfg.IdleTimeout)
		}
		return frame, err
	}
}

// forward sends one admitted request upstream and queues its response.
func (c *clientConn) forward(ctx context.Context, hdr requestHeader, frame []byte, adm admission) error {
	if c.auth.passedThrough && c.switchedSince(adm) {
		c.doneInflight(hdr.Key)
		return fault("sasl_passthrough_switch", fmt.Errorf(
			"the client authenticated to cluster %s with its own SASL credentials (clientAuth.mode passthrough); closing so that it reconnects and authenticates to cluster %s",
			c.cur.u.name, adm.u.name))
	}
	up, err := c.upstream(ctx, adm)
	if err != nil {
		c.doneInflight(hdr.Key)
		return fault("upstream_dial", err)
	}
	byLeader := c.routesByLeader()
	routed := hdr.Key == keyProduce && byLeader
	if local, ok := c.orphanAnswer(hdr, frame, up); ok {
		c.doneInflight(hdr.Key)
		if local == nil {
			// acks=0: no answer to carry the error. A broker closes the
			// connection then, so that the client refreshes its metadata
			// instead of sending on into the void.
			return fault("orphan_acks0", fmt.Errorf(
				"an acks=0 Produce reached virtual broker %d, which has no broker of cluster %s behind it and does not lead its partitions; closing, as a broker does, so that the client refreshes its metadata",
				c.vnode, up.u.name))
		}
		return c.enqueue(ctx, &pendingReq{hdr: hdr, local: local})
	}
	if up.sc.ReauthDue() {
		if err := c.reauthenticate(ctx, up); err != nil {
			c.doneInflight(hdr.Key)
			return err
		}
	}
	rw, err := c.p.rewriteRequest(ctx, c, up.u, hdr, frame)
	if err != nil {
		c.doneInflight(hdr.Key)
		return fault("rewrite_request", err)
	}
	if rw.local != nil {
		c.doneInflight(hdr.Key)
		return c.enqueue(ctx, &pendingReq{hdr: hdr, local: rw.local})
	}
	to, parts, split := up, []net.Buffers(nil), (*requestSplit)(nil)
	var (
		resend *produceResend
		seq    uint64
		fetch  *fetchPlan
	)
	if rw.fetch != nil && byLeader {
		fetch = c.planFetch(adm, up, hdr, rw.fetch, time.Now())
	}
	if routed {
		if rw.expect {
			// Numbered for the fence of its partitions (resend.go).
			c.routedSeq++
			seq = c.routedSeq
		}
		if rw.expect && rw.produce != nil {
			// Kept for re-sends until answered; rw.frame is frame then.
			// (Without the walk — partitions the proxy answers itself
			// were cut out — nothing is re-sent, but the fence holds.)
			resend = &produceResend{frame: rw.frame, walk: rw.produce}
		}
		to, parts, split = c.routeProduce(ctx, adm, up, hdr, rw.frame, rw.produce, seq)
	} else if routedPartitionKey(hdr.Key) && hdr.Known && byLeader {
		to, parts, split = c.routePartitions(ctx, adm, up, hdr, rw.frame)
	}
	if to != up || split != nil {
		subs := []*upConn{to}
		if split != nil {
			subs = split.subs
		}
		for _, t := range subs {
			if t != up && t.sc.ReauthDue() {
				if err := c.reauthenticate(ctx, t); err != nil {
					c.doneInflight(hdr.Key)
					c.p.releaseSeqs(rw.seqs)
					return err
				}
			}
		}
	}
	expect := rw.expect
	if expect {
		select {
		case c.slots <- struct{}{}: // the writer frees it with the response
		case <-ctx.Done():
			c.doneInflight(hdr.Key)
			c.p.releaseSeqs(rw.seqs)
			return errClientGone
		}
		// Once queued, the writer (or serve's cleanup) lowers inflight.
		pr := &pendingReq{hdr: hdr, up: to, sent: time.Now(), split: split, resend: resend, seq: seq, fetch: fetch, stable: byLeader,
			prevProducerID: rw.prevProducerID, transactional: rw.transactional, member: rw.member, txn: adm.txn, seqs: rw.seqs}
		if err := c.enqueue(ctx, pr); err != nil {
			c.doneInflight(hdr.Key)
			c.p.releaseSeqs(rw.seqs)
			return err
		}
		c.frameKept = resend != nil
	}
	if split == nil && fetch == nil {
		err = c.send(to, up, net.Buffers{rw.frame})
	}
	for i := 0; split != nil && i < len(split.subs) && err == nil; i++ {
		err = c.send(split.subs[i], up, parts[i])
	}
	if !expect {
		c.doneInflight(hdr.Key)
	}
	if errors.Is(err, errAbandoned) {
		// A switch closed this upstream under us; the writer answers the
		// queued entry (a Fetch early, anything else by closing).
		return nil
	}
	return err
}

// errAbandoned: a write failed on an upstream connection a switch closed.
var errAbandoned = errors.New("upstream connection closed by a switch")

// send writes a request (or a part of it) to t; up is the connection the
// client's virtual broker stands for, any other is a link.
func (c *clientConn) send(t, up *upConn, frame net.Buffers) error {
	if t != up {
		t.lastUsed.Store(time.Now().UnixNano())
	}
	if err := writeFrameBuffers(t.nc, frame); err != nil {
		if t.abandoned.Load() {
			return errAbandoned
		}
		return fault("upstream_write", fmt.Errorf("write to %s: %w", t.nc.RemoteAddr(), err))
	}
	return nil
}

func (c *clientConn) doneInflight(key int16) {
	// Stored before inflight drops so that the reader, seeing no request
	// in flight, also sees that one was just finished.
	c.lastAnswered.Store(time.Now().UnixNano())
	c.inflight.Add(-1)
	if isLongPoll(key) {
		c.inflightFetch.Add(-1)
	}
	c.p.inflightByKey(key).Add(-1)
}

func (c *clientConn) enqueue(ctx context.Context, pr *pendingReq) error {
	select {
	case c.pending <- pr:
		return nil
	case <-ctx.Done():
		return errClientGone
	}
}

// upstream returns the upstream connection for this admission, dialling the
// active cluster when there is none or a switch happened since it was made,
// or when an orphan connection's virtual broker has since been given a
// broker of its own (the cluster grew): it would otherwise refuse, for
// good, the partitions that broker leads.
func (c *clientConn) upstream(ctx context.Context, adm admission) (*upConn, error) {
	c.curMu.Lock()
	cur := c.cur
	c.curMu.Unlock()
	if cur != nil && cur.gen == adm.gen && cur.u == adm.u && !(cur.orphan && c.p.hasBroker(adm.u, c.vnode)) {
		return cur, nil
	}
	if cur != nil {
		// Responses still due on the old connections are read first; the
		// writer closes them after the last of them.
		c.curMu.Lock()
		links := c.links
		c.links = nil
		c.curMu.Unlock()
		for _, old := range append([]*upConn{cur}, mapValues(links)...) {
			if err := c.enqueue(ctx, &pendingReq{closeUp: old}); err != nil {
				return nil, err
			}
		}
		c.staleFetchSession = true
	}
	addr, node, own := c.p.upstreamAddrFor(adm.u, c.vnode)
	dial := adm.u.sec.Dial
	if c.p.cfg.ClientAuth.Mode == ClientAuthPassthrough {
		dial = adm.u.sec.DialTLS // the client authenticates itself
	}
	sc, err := dial(ctx, addr, c.p.cfg.DialTimeout)
	if err != nil && !own {
		// Any broker serves this connection (the bootstrap listener, or a
		// virtual broker without a broker of its own), and the one the
		// cluster's metadata named may be gone: the configured bootstrap
		// addresses are tried before the client is turned away.
		for _, b := range adm.u.cfg.Bootstrap {
			if b == addr {
				continue
			}
			if bsc, berr := dial(ctx, b, c.p.cfg.DialTimeout); berr == nil {
				sc, err, node = bsc, nil, -1
				break
			}
		}
	}
	if err != nil {
		adm.u.setErr(err)
		return nil, err
	}
	// nc is the TCP or TLS connection itself: reads and writes skip the
	// wrapper kafkasec.Conn adds for the session's renewal time.
	up := &upConn{nc: sc.Conn, sc: sc, u: adm.u, gen: adm.gen, orphan: c.vnode >= 0 && !own, node: node}
	c.curMu.Lock()
	c.cur = up
	c.curMu.Unlock()
	return up, nil
}

// switchedSince reports whether adm routes to another upstream connection
// than the current one.
func (c *clientConn) switchedSince(adm admission) bool {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	return c.cur != nil && (c.cur.gen != adm.gen || c.cur.u != adm.u)
}

// reauthenticate renews up's SASL session (KIP-368) before the next request
// is written: the broker closes a connection whose session has expired when
// a request arrives. The writer runs the exchange when it reaches the
// marker queued here — every earlier response has then been read — while
// the reader, waiting for it, writes nothing.
func (c *clientConn) reauthenticate(ctx context.Context, up *upConn) error {
	done := make(chan error, 1)
	if err := c.enqueue(ctx, &pendingReq{reauth: up, reauthDone: done}); err != nil {
		return err
	}
	select {
	case err := <-done:
		if err != nil {
			return fault("upstream_reauth", err)
		}
		c.p.m.reauths.Inc()
		return nil
	case <-ctx.Done():
		return errClientGone
	}
}

// abandonUpstream marks the current upstream connection abandoned and closes
// it. Called by a switch after draining.
func (c *clientConn) abandonUpstream() {
	c.curMu.Lock()
	ups := append(mapValues(c.links), mapValues(c.wlinks)...)
	if c.cur != nil {
		c.retiredBelow = max(c.retiredBelow, c.cur.gen+1)
		ups = append(ups, c.cur)
	}
	c.curMu.Unlock()
	for _, up := range ups {
		up.abandoned.Store(true)
		up.close()
	}
	c.closeFetchLinks(true)
}

// mapValues returns m's values (links: few).
func mapValues(m map[int32]*upConn) []*upConn {
	out := make([]*upConn, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (c *clientConn) writeLoop(ctx context.Context) error {
	var buf []byte
	for {
		var pr *pendingReq
		select {
		case pr = <-c.pending:
		case <-ctx.Done():
			return nil
		}
		if pr.closeUp != nil {
			pr.closeUp.close()
			continue
		}
		if pr.reauth != nil {
			err := pr.reauth.u.sec.Reauthenticate(ctx, pr.reauth.sc, c.p.cfg.DialTimeout)
			pr.reauthDone <- err
			if err != nil {
				return fault("upstream_reauth", err)
			}
			continue
		}
		if pr.local != nil {
			if err := c.writeClient(pr.hdr.Key, pr.local); err != nil {
				return err
			}
			if pr.closeAfter {
				return fault("client_auth_failed", errors.New("authentication failed"))
			}
			continue
		}
		var err error
		if buf, err = c.answer(ctx, pr, buf); err != nil {
			return err
		}
	}
}

// answer reads the response to pr from its upstream connection and writes
// it to the client. buf is the read buffer to reuse, returned for the next.
func (c *clientConn) answer(ctx context.Context, pr *pendingReq, buf []byte) ([]byte, error) {
	// A Produce's probes end with its response, or without one.
	defer c.p.releaseSeqs(pr.seqs)
	var (
		frame      []byte
		err, split error
		from       = pr.up // where the response (or the error) came from
	)
	switch {
	case pr.fetch != nil:
		var pieces net.Buffers
		frame, pieces, err = c.answerRoutedFetch(ctx, pr)
		if err != nil {
			c.doneInflight(pr.hdr.Key)
			<-c.slots
			return buf, errClientGone
		}
		if pieces != nil {
			// Spliced from the brokers' answers, translated already.
			<-c.slots
			c.p.m.forKey(pr.hdr.Key).latency.Observe(time.Since(pr.sent).Seconds())
			c.doneInflight(pr.hdr.Key)
			return buf, c.writeClientBuffers(pr.hdr.Key, pieces)
		}
	case pr.split != nil:
		frame, from, err, split = c.readSplit(ctx, pr)
	case pr.resend != nil:
		// Into buf: re-sends' answers, if any, are read into their own.
		frame, err = readFrame(pr.up.nc, c.p.cfg.MaxFrameBytes, buf)
		if err == nil && (len(frame) < 4 || int32(binary.BigEndian.Uint32(frame)) != pr.hdr.CorrID) {
			split = fmt.Errorf("a Produce response with another correlation id than %d", pr.hdr.CorrID)
		}
		if err == nil && split == nil {
			var failed *upConn
			frame, failed, err, split = c.finishProduce(ctx, pr, [][]byte{frame}, []*upConn{pr.up})
			if failed != nil {
				from = failed
			}
		}
	default:
		frame, err = readFrame(pr.up.nc, c.p.cfg.MaxFrameBytes, buf)
	}
	if pr.seq != 0 {
		c.answeredSeq.Store(pr.seq) // the fence of its partitions lifts
	}
	if pr.resend != nil {
		// The request's buffer goes back to the reader.
		select {
		case c.freeFrames <- pr.resend.frame[:0]:
		default:
		}
	}
	<-c.slots // answered (or about to be answered by the proxy)
	if split != nil {
		c.doneInflight(pr.hdr.Key)
		return buf, fault("upstream_protocol", fmt.Errorf("cluster %s: %w", from.u.name, split))
	}
	if err != nil {
		if from.abandoned.Load() && isLongPoll(pr.hdr.Key) {
			// The switch answered this long poll early. A fetch gets an
			// empty response that also ends the client's fetch session,
			// so its next fetch starts a new one on the new cluster. A
			// JoinGroup or SyncGroup waiting for a rebalance on the old
			// cluster gets NOT_COORDINATOR: the client looks the
			// coordinator up again — on the new cluster — and rejoins
			// there.
			c.p.m.earlyFetches.Inc()
			c.p.noteEarlyFetch()
			resp := earlyLongPollResponse(pr.hdr)
			c.doneInflight(pr.hdr.Key)
			if err := c.writeClient(pr.hdr.Key, resp); err != nil {
				return buf, err
			}
			return buf, nil
		}
		c.doneInflight(pr.hdr.Key)
		if from.abandoned.Load() {
			return buf, fault("switch_undrained", fmt.Errorf("%s request in flight when the switch deadline passed", apiName(pr.hdr.Key)))
		}
		if errors.Is(err, errFrameTooLarge) || errors.Is(err, errFrameNegative) {
			return buf, fault("upstream_frame_too_large", err)
		}
		return buf, fault("upstream_closed", fmt.Errorf("cluster %s: reading %s response: %w", from.u.name, apiName(pr.hdr.Key), err))
	}
	if pr.split == nil && pr.fetch == nil {
		buf = frame[:0] // a merged frame is new, buf is kept for the next
	}
	c.p.m.forKey(pr.hdr.Key).latency.Observe(time.Since(pr.sent).Seconds())
	if pr.member != nil {
		c.p.learnMember(pr.member, pr.hdr, frame)
	}
	if len(frame) < 4 || int32(binary.BigEndian.Uint32(frame)) != pr.hdr.CorrID {
		c.doneInflight(pr.hdr.Key)
		got := "none"
		if len(frame) >= 4 {
			got = strconv.Itoa(int(int32(binary.BigEndian.Uint32(frame))))
		}
		return buf, fault("upstream_protocol", fmt.Errorf("cluster %s: response correlation id %s, want %d", pr.up.u.name, got, pr.hdr.CorrID))
	}
	if pr.txn != nil {
		frame, err = c.p.txnResponse(pr.up.u, pr, frame)
		if err != nil {
			c.doneInflight(pr.hdr.Key)
			return buf, fault("upstream_protocol", fmt.Errorf("cluster %s: %s v%d response: %w", pr.up.u.name, apiName(pr.hdr.Key), pr.hdr.Version, err))
		}
	}
	out, err := c.p.rewriteResponse(ctx, pr.up.u, pr, frame)
	c.doneInflight(pr.hdr.Key)
	if err != nil {
		return buf, fault("upstream_protocol", fmt.Errorf("cluster %s: %s v%d response: %w", pr.up.u.name, apiName(pr.hdr.Key), pr.hdr.Version, err))
	}
	if err := c.writeClient(pr.hdr.Key, out); err != nil {
		return buf, err
	}
	return buf, nil
}

// readSplit reads the answers to a split request (a Produce, or another
// partition request: routeparts.go) from each of its parts' connections,
// in the order the parts were written, and merges them. It returns the
// merged frame; or the connection a read failed on with the error; or, as
// split, an answer that does not fit the request.
func (c *clientConn) readSplit(ctx context.Context, pr *pendingReq) (frame []byte, from *upConn, err, split error) {
	frames := make([][]byte, len(pr.split.subs))
	for i, up := range pr.split.subs {
		f, err := readFrame(up.nc, c.p.cfg.MaxFrameBytes, nil)
		if err != nil {
			return nil, up, err, nil
		}
		if len(f) < 4 || int32(binary.BigEndian.Uint32(f)) != pr.hdr.CorrID {
			return nil, up, nil, fmt.Errorf("part %d of a split %s: a response with another correlation id than %d", i+1, apiName(pr.hdr.Key), pr.hdr.CorrID)
		}
		frames[i] = f
	}
	if pr.split.merge != nil {
		frame, split := pr.split.merge(frames)
		return frame, pr.up, nil, split
	}
	frame, failed, err, split := c.finishProduce(ctx, pr, frames, pr.split.subs)
	if failed == nil {
		failed = pr.up
	}
	return frame, failed, err, split
}

// orphanAnswer answers a request for partitions that reached a virtual
// broker the active cluster has no broker behind (it has fewer brokers than
// the cluster before a switch) with NOT_LEADER_OR_FOLLOWER, unless the
// broker the connection reaches leads every partition it names (always so
// on a one-broker cluster): then it is forwarded. Forwarded regardless, a
// Produce could be written in part (the partitions that broker leads) and
// refused in part, and a client that resends after such a partial answer
// (kafkajs resends a partition that moved to a broker it has not heard
// from in the same send, and rolls back the sequences of the whole
// request) writes records twice.
func (c *clientConn) orphanAnswer(hdr requestHeader, frame []byte, up *upConn) ([]byte, bool) {
	if !up.orphan || !leaderBound(hdr.Key) || !hdr.Known {
		return nil, false
	}
	if c.routesByLeader() {
		return nil, false // each partition goes to its leader (route.go, fetchroute.go, routeparts.go)
	}
	if up.node >= 0 && c.p.ledBy(up.u, up.node, hdr, frame[hdr.BodyOffset:]) {
		return nil, false
	}
	local, err := notLeaderResponse(hdr, frame[hdr.BodyOffset:])
	if err != nil {
		return nil, false // the broker answers what the proxy cannot read
	}
	return local, true
}

// ledBy reports whether broker node of u leads every partition a request
// for partitions names, as far as u's metadata tells.
func (p *Proxy) ledBy(u *upstream, node int32, hdr requestHeader, body []byte) bool {
	req := kmsg.RequestForKey(hdr.Key)
	if req == nil {
		return false
	}
	if err := decodeRequest(req, hdr, body); err != nil {
		return false
	}
	led := func(topic string, partition int32) bool {
		l, ok := u.leader(topic, partition)
		return ok && l == node
	}
	// Topic ids in a request are the ones the proxy presents.
	named := func(name string, id [16]byte) string {
		if n, ok := p.topicNames.Load(id); ok && id != ([16]byte{}) {
			return n.(string)
		}
		return name
	}
	all := true
	check := func(topic string, id [16]byte, partitions ...int32) {
		for _, part := range partitions {
			all = all && led(named(topic, id), part)
		}
	}
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		for _, t := range r.Topics {
			for _, part := range t.Partitions {
				check(t.Topic, t.TopicID, part.Partition)
			}
		}
	case *kmsg.FetchRequest:
		for _, t := range r.Topics {
			for _, part := range t.Partitions {
				check(t.Topic, t.TopicID, part.Partition)
			}
		}
	case *kmsg.ListOffsetsRequest:
		for _, t := range r.Topics {
			for _, part := range t.Partitions {
				check(t.Topic, [16]byte{}, part.Partition)
			}
		}
	case *kmsg.OffsetForLeaderEpochRequest:
		for _, t := range r.Topics {
			for _, part := range t.Partitions {
				check(t.Topic, [16]byte{}, part.Partition)
			}
		}
	default:
		return false
	}
	return all
}

// writeClientBuffers writes a response frame given in pieces (payload
// without its size) to the client.
func (c *clientConn) writeClientBuffers(key int16, pieces net.Buffers) error {
	size := 0
	for _, p := range pieces {
		size += len(p)
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.ClientIOTimeout))
	defer c.lastAnswered.Store(time.Now().UnixNano())
	return c.wroteClient(key, size, writeFrameBuffers(c.nc, pieces))
}

// writeClient writes a response frame (payload without its size) to the client.
func (c *clientConn) writeClient(key int16, frame []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.ClientIOTimeout))
	// A large response can take a while to write; idleness starts once
	// it is out.
	defer c.lastAnswered.Store(time.Now().UnixNano())
	return c.wroteClient(key, len(frame), writeFrame(c.nc, frame))
}

// wroteClient accounts a response of size bytes written to the client
// with err.
func (c *clientConn) wroteClient(key int16, size int, err error) error {
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fault("client_timeout", fmt.Errorf("response not taken within %v (clientIOTimeout)", c.p.cfg.ClientIOTimeout))
		}
		return errClientGone
	}
	c.p.m.forKey(key).responseBytes.Add(float64(size + 4))
	return nil
}
