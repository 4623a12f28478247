package admin

import (
	"context"
	"net/http"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard/switchyard/internal/apiguard"
)

// guard decides which requests reach the admin API. It is read-only after
// construction and safe for concurrent use.
//
// The rules, in the order they are checked (rules 1 to 3 and the token
// comparison are internal/apiguard's, which the control plane shares):
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
	browser     *apiguard.Browser
	tokens      *apiguard.Tokens // Len 0: no token
	verifyCerts bool
	logger      *zap.Logger
}

func newGuard(cfg Config, logger *zap.Logger) *guard {
	g := &guard{
		browser: apiguard.NewBrowser(apiguard.BrowserConfig{API: "admin API", Listen: cfg.Listen,
			AllowedHosts: cfg.AllowedHosts, AllowedHostsSetting: "the admin allowed hosts (--admin-allowed-hosts)"}),
		tokens:      apiguard.NewTokens(),
		verifyCerts: cfg.TLS.CAFile != "",
		logger:      logger,
	}
	if cfg.Token != "" {
		g.tokens = apiguard.NewTokens(string(cfg.Token))
	}
	return g
}

// authenticate applies rule 4: nil when no credential is configured, when
// the bearer token matches, or when no token is sent and the connection
// has a verified client certificate. A token that is sent and wrong is
// refused even with a certificate. Errors are Unauthenticated status
// errors and never contain the token.
func (g *guard) authenticate(c apiguard.Caller) error {
	if g.tokens.Len() == 0 && !g.verifyCerts {
		return nil
	}
	if c.Authorization != "" {
		got, ok := apiguard.Bearer(c.Authorization)
		if !ok {
			return status.Error(codes.Unauthenticated, "invalid authorization: want authorization: Bearer <token>")
		}
		// Compared as digests: the time taken does not tell the token's
		// length.
		if g.tokens.Match(got) < 0 {
			return status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return nil
	}
	// tlsfiles' VerifyConnection verified the certificate against the
	// client CA, or the handshake would not have completed.
	if g.verifyCerts && c.TLS != nil && len(c.TLS.PeerCertificates) > 0 {
		return nil
	}
	want := "a bearer token (authorization: Bearer <token>)"
	switch {
	case g.verifyCerts && g.tokens.Len() > 0:
		want += " or a client certificate"
	case g.verifyCerts:
		want = "a client certificate"
	}
	return status.Error(codes.Unauthenticated, "the admin API needs credentials: "+want)
}

// refused logs a refusal (without credentials) and passes err on.
func (g *guard) refused(c apiguard.Caller, what string, err error) error {
	g.logger.Info("admin: request refused", zap.String("call", what), zap.String("host", c.Host),
		zap.String("origin", c.Origin), zap.String("reason", status.Convert(err).Message()))
	return err
}

// checkCall applies rules 1, 2 and 4 to gRPC calls (through
// apiguard.Interceptors); gRPC health needs no credentials.
func (g *guard) checkCall(ctx context.Context, method string) error {
	c := apiguard.CallerOfContext(ctx)
	if err := g.browser.Check(c); err != nil {
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

// restHandler applies rules 1 to 4 to REST requests before next (rule 3
// is apiguard.CheckContentType).
func (g *guard) restHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := apiguard.CallerOfRequest(r)
		what := r.Method + " " + r.URL.Path
		if code, err := g.browser.CheckRequest(c, r); err != nil {
			apiguard.WriteStatus(w, code, g.refused(c, what, err))
			return
		}
		if !openPaths[r.URL.Path] {
			if err := g.authenticate(c); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-admin"`)
				apiguard.WriteStatus(w, http.StatusUnauthorized, g.refused(c, what, err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
