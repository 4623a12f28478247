package control

import (
	"context"
	"net/http"

	"go.uber.org/zap"
	"google.golang.org/grpc/status"

	"github.com/switchyard/switchyard/internal/apiguard"
)

// browserGuard keeps web browsers out of the API, with the rules the
// sidecar's admin API applies (internal/apiguard): a browser on a machine
// where the control plane listens on loopback — a developer's, or an
// operator's with a kubectl port-forward — can be made by any page to send
// it requests, and without credentials configured those may start a
// cutover.
//
//   - REST, every path: the Host must be an IP address, localhost, the
//     listen host or one of ServerConfig.AllowedHosts (DNS rebinding: 403);
//     a foreign Origin or a cross-site Sec-Fetch-Site is refused (403); a
//     POST, PUT, PATCH or DELETE with a body must be application/json
//     (415).
//   - gRPC: the Origin and Sec-Fetch-Site rule only (PERMISSION_DENIED).
//     Sidecars and switchyard ctl dial the control plane by its Service
//     name, which the Host rule would refuse; a browser cannot send gRPC
//     here anyway — not over h2c, which browsers do not speak, and over TLS
//     a rebound name fails the certificate check.
//
// It is read-only after construction and safe for concurrent use.
type browserGuard struct {
	rules *apiguard.Browser
	log   *zap.Logger
}

func newBrowserGuard(cfg ServerConfig, log *zap.Logger) *browserGuard {
	return &browserGuard{log: log, rules: apiguard.NewBrowser(apiguard.BrowserConfig{API: "control plane", Listen: cfg.Listen,
		AllowedHosts: cfg.AllowedHosts, AllowedHostsSetting: "allowedHosts"})}
}

func (g *browserGuard) refused(c apiguard.Caller, what string, err error) error {
	g.log.Info("control: browser request refused", zap.String("call", what), zap.String("host", c.Host),
		zap.String("origin", c.Origin), zap.String("reason", status.Convert(err).Message()))
	return err
}

// rest applies the REST rules before next.
func (g *browserGuard) rest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := apiguard.CallerOfRequest(r)
		if code, err := g.rules.CheckRequest(c, r); err != nil {
			apiguard.WriteStatus(w, code, g.refused(c, r.Method+" "+r.URL.Path, err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkCall applies the gRPC rule (through apiguard.Interceptors).
func (g *browserGuard) checkCall(ctx context.Context, method string) error {
	c := apiguard.CallerOfContext(ctx)
	if err := g.rules.CheckOrigin(c); err != nil {
		return g.refused(c, method, err)
	}
	return nil
}
