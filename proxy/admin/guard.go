package admin

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// caller is what the guard looks at in a request, read from an HTTP
// request (REST) or from a gRPC call's metadata and peer: the same rules
// then hold for both.
type caller struct {
	host          string               // Host header, or :authority
	origin        string               // Origin header, "" if absent
	fetchSite     string               // Sec-Fetch-Site header, "" if absent
	authorization string               // Authorization header, "" if absent
	tls           *tls.ConnectionState // nil over plaintext
}

func callerOfRequest(r *http.Request) caller {
	return caller{
		host:          r.Host,
		origin:        r.Header.Get("Origin"),
		fetchSite:     r.Header.Get("Sec-Fetch-Site"),
		authorization: r.Header.Get("Authorization"),
		tls:           r.TLS,
	}
}

func callerOfContext(ctx context.Context) caller {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(key string) string {
		if v := md.Get(key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c := caller{
		host:          first(":authority"),
		origin:        first("origin"),
		fetchSite:     first("sec-fetch-site"),
		authorization: first("authorization"),
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.tls = &info.State
		}
	}
	return c
}

// guard decides which requests reach the admin API. It is read-only after
// construction and safe for concurrent use.
//
// The rules, in the order they are checked:
//
//  1. Host (DNS rebinding): the host part of the Host header (HTTP/2
//     :authority) must be an IP address, "localhost" or a name under
//     ".localhost", the host of the listen address, or one of
//     AllowedHosts. A web page that rebinds its own name to 127.0.0.1 still
//     sends that name, and is refused.
//  2. Origin (cross-site requests): a request that carries an Origin
//     header must come from the admin server's own origin, http(s)://
//     plus the request's Host; a Sec-Fetch-Site header, when present, must
//     be "same-origin" or "none". Browsers send these; curl, grpc-go and
//     switchyard's own clients do not.
//  3. Content type (REST only): POST, PUT and PATCH, and a DELETE with a
//     body, must be Content-Type application/json, or get 415. A browser
//     sends a JSON body cross-origin without asking first only as
//     text/plain, form data or multipart; the gateway would decode any of
//     them as JSON.
//  4. Credentials, when a token or a client CA is configured: every
//     ProxyAdminService call (not /healthz, /readyz, /metrics,
//     /v1/openapi.json or gRPC health) carries the bearer token or comes
//     over a connection with a verified client certificate.
type guard struct {
	listenHost   string
	allowedHosts map[string]bool
	token        []byte // empty: no token
	verifyCerts  bool
	logger       *zap.Logger
}

func newGuard(cfg Config, logger *zap.Logger) *guard {
	g := &guard{allowedHosts: map[string]bool{}, verifyCerts: cfg.TLS.CAFile != "", logger: logger}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		g.listenHost = strings.ToLower(host)
	}
	for _, h := range cfg.AllowedHosts {
		g.allowedHosts[strings.ToLower(h)] = true
	}
	if cfg.Token != "" {
		g.token = []byte(cfg.Token)
	}
	return g
}

// checkBrowser applies rules 1 and 2 and returns a PermissionDenied status
// error naming the rule broken.
func (g *guard) checkBrowser(c caller) error {
	host := c.host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	switch {
	case net.ParseIP(host) != nil, host == "localhost", strings.HasSuffix(host, ".localhost"),
		host != "" && host == g.listenHost, g.allowedHosts[host]:
	default:
		return status.Errorf(codes.PermissionDenied,
			"host %q is not an IP address, localhost or the admin address: refused as DNS rebinding (add it to the admin allowed hosts to dial by that name)", c.host)
	}
	if c.origin != "" {
		scheme := "http"
		if c.tls != nil {
			scheme = "https"
		}
		u, err := url.Parse(c.origin)
		if err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, c.host) {
			return status.Errorf(codes.PermissionDenied, "origin %q is not this admin server's (%s://%s): cross-origin requests are refused", c.origin, scheme, c.host)
		}
	}
	switch c.fetchSite {
	case "", "same-origin", "none":
	default:
		return status.Errorf(codes.PermissionDenied, "sec-fetch-site %q: cross-origin requests are refused", c.fetchSite)
	}
	return nil
}

// authenticate applies rule 4: nil when no credential is configured, when
// the bearer token matches, or when no token is sent and the connection
// has a verified client certificate. A token that is sent and wrong is
// refused even with a certificate. Errors are Unauthenticated status
// errors and never contain the token.
func (g *guard) authenticate(c caller) error {
	if len(g.token) == 0 && !g.verifyCerts {
		return nil
	}
	if c.authorization != "" {
		got, ok := strings.CutPrefix(c.authorization, "Bearer ")
		if !ok {
			return status.Error(codes.Unauthenticated, "invalid authorization: want authorization: Bearer <token>")
		}
		if len(g.token) == 0 || subtle.ConstantTimeCompare([]byte(got), g.token) != 1 {
			return status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return nil
	}
	// tlsfiles' VerifyConnection verified the certificate against the
	// client CA, or the handshake would not have completed.
	if g.verifyCerts && c.tls != nil && len(c.tls.PeerCertificates) > 0 {
		return nil
	}
	want := "a bearer token (authorization: Bearer <token>)"
	switch {
	case g.verifyCerts && len(g.token) > 0:
		want += " or a client certificate"
	case g.verifyCerts:
		want = "a client certificate"
	}
	return status.Error(codes.Unauthenticated, "the admin API needs credentials: "+want)
}

// refused logs a refusal (without credentials) and passes err on.
func (g *guard) refused(c caller, what string, err error) error {
	g.logger.Info("admin: request refused", zap.String("call", what), zap.String("host", c.host),
		zap.String("origin", c.origin), zap.String("reason", status.Convert(err).Message()))
	return err
}

// unaryInterceptor and streamInterceptor apply rules 1, 2 and 4 to gRPC
// calls; gRPC health needs no credentials.
func (g *guard) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.checkCall(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (g *guard) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := g.checkCall(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

func (g *guard) checkCall(ctx context.Context, method string) error {
	c := callerOfContext(ctx)
	if err := g.checkBrowser(c); err != nil {
		return g.refused(c, method, err)
	}
	if strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/") {
		return nil
	}
	if err := g.authenticate(c); err != nil {
		return g.refused(c, method, err)
	}
	return nil
}

// openPaths are the REST paths that need no credentials: read-only, and
// served without credentials on the health listener anyway.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/v1/openapi.json": true}

// restHandler applies rules 1 to 4 to REST requests before next.
func (g *guard) restHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := callerOfRequest(r)
		what := r.Method + " " + r.URL.Path
		if err := g.checkBrowser(c); err != nil {
			writeStatus(w, http.StatusForbidden, g.refused(c, what, err))
			return
		}
		if err := checkContentType(r); err != nil {
			writeStatus(w, http.StatusUnsupportedMediaType, g.refused(c, what, err))
			return
		}
		if !openPaths[r.URL.Path] {
			if err := g.authenticate(c); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-admin"`)
				writeStatus(w, http.StatusUnauthorized, g.refused(c, what, err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkContentType applies rule 3.
func checkContentType(r *http.Request) error {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	case http.MethodDelete:
		if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
			return nil // curl -X DELETE; a browser cannot send it cross-origin unasked
		}
	default:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return nil
	}
	return status.Errorf(codes.InvalidArgument,
		"content-type %q: %s needs Content-Type: application/json (curl: --json, or -H 'Content-Type: application/json')", ct, r.Method)
}

// writeStatus writes err, a gRPC status error, as the gateway writes its
// errors: {"code": <gRPC code>, "message": "..."}, with HTTP status code.
func writeStatus(w http.ResponseWriter, code int, err error) {
	s := status.Convert(err)
	body, _ := json.Marshal(struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}{int32(s.Code()), s.Message()}) // cannot fail: a struct of an int and a string
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "%s\n", body) // a failed write means the client left
}
