package proxy

// Failed client authentications (clientAuth.mode terminate): the delay
// before the answer, and the limit per source address.

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxAuthSources bounds the addresses an authLimiter tracks at once.
const maxAuthSources = 4096

// globalAuthFactor: all sources together may fail this many times the
// per-source limit in a window. Past maxAuthSources addresses a new one
// evicts an old window, so a guesser with more addresses than that would
// otherwise get fresh attempts without end.
const globalAuthFactor = 64

// authLimiter counts the failed authentications of each source address
// (sourceOf) in a fixed window that starts at its first attempt:
// clientAuth.maxFailedAuths within clientAuth.failedAuthWindow. Beyond
// that, the address's attempts are refused without checking credentials
// until the window ends, so guessing from one address runs at no more
// than maxFailedAuths per window however many connections it opens.
//
// Memory is bounded: at most size addresses are tracked; a new one then
// takes the place of expired windows, or else of the window closest to
// its end. A nil *authLimiter limits nothing. Safe for concurrent use.
type authLimiter struct {
	max    int
	window time.Duration
	size   int

	mu      sync.Mutex
	sources map[string]*authSource
	global  authSource // every source's checks, against max*globalAuthFactor
}

// authSource is one address's window.
type authSource struct {
	since time.Time // the window's start
	n     int       // failures in the window, plus checks under way
}

// newAuthLimiter returns a limiter of max failures per window, or nil
// (no limit) when max is 0.
func newAuthLimiter(max int, window time.Duration) *authLimiter {
	if max <= 0 {
		return nil
	}
	return &authLimiter{max: max, window: window, size: maxAuthSources, sources: map[string]*authSource{}}
}

// begin reserves one credential check for source. ok false refuses it:
// source failed max times in its window, which ends in retryIn. Otherwise
// the caller checks the credentials and then calls end, with failed true
// when they were wrong (the reservation then counts as a failure) and
// false when they were right or not yet checked (it is returned). The
// reservation, taken before the check, keeps parallel attempts from one
// address within the limit.
func (l *authLimiter) begin(source string) (end func(failed bool), retryIn time.Duration, ok bool) {
	if l == nil {
		return func(bool) {}, 0, true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sources[source]
	if s != nil && now.Sub(s.since) >= l.window {
		s = nil
	}
	if s == nil {
		if _, tracked := l.sources[source]; !tracked && len(l.sources) >= l.size {
			l.evict(now)
		}
		s = &authSource{since: now}
		l.sources[source] = s
	}
	if s.n >= l.max {
		return nil, s.since.Add(l.window).Sub(now), false
	}
	g := &l.global
	if now.Sub(g.since) >= l.window {
		*g = authSource{since: now}
	}
	if g.n >= l.max*globalAuthFactor {
		return nil, g.since.Add(l.window).Sub(now), false
	}
	s.n++
	g.n++
	gSince := g.since
	return func(failed bool) {
		if failed {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.global.since == gSince && l.global.n > 0 {
			l.global.n--
		}
		// The window may have been replaced or evicted meanwhile.
		if l.sources[source] == s {
			s.n--
			if s.n == 0 {
				delete(l.sources, source)
			}
		}
	}, 0, true
}

// evict makes room for one address: it drops the expired windows, or else
// the one closest to its end. Called with l.mu held.
func (l *authLimiter) evict(now time.Time) {
	var (
		oldestKey string
		oldest    *authSource
	)
	for k, s := range l.sources {
		switch {
		case now.Sub(s.since) >= l.window:
			delete(l.sources, k)
		case oldest == nil || s.since.Before(oldest.since):
			oldestKey, oldest = k, s
		}
	}
	if len(l.sources) >= l.size {
		delete(l.sources, oldestKey)
	}
}

// tracked returns how many addresses l tracks (tests).
func (l *authLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

// sourceOf is the address failures are counted by: the client's IP, or
// its /64 for IPv6 (one host usually holds a whole /64, so counting
// single addresses would let it rotate through them). Every loopback
// address is one source: any local process may bind any of 127.0.0.0/8,
// so counting them apart would let it rotate through sixteen million.
func sourceOf(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() {
		return "loopback"
	}
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// sleepCtx waits for d, or until ctx ends (its error then).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
