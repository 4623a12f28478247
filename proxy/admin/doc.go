// Package admin serves a proxy's local admin API: it adapts the proxy core's
// small Go API (status, switch, gates, readiness) to the outside world.
//
// The admin listener (Config.Listen, 127.0.0.1:9190 by default) carries:
//   - gRPC: switchyard.v1.ProxyAdminService and grpc.health.v1.Health;
//   - REST/JSON for the same service through grpc-gateway: GET /v1/status,
//     POST /v1/switch, PUT /v1/gates, DELETE /v1/gates;
//   - GET /v1/openapi.json, the OpenAPI (Swagger 2.0) document of that REST API;
//   - GET /metrics (Prometheus), GET /healthz (liveness), GET /readyz
//     (readiness, from the proxy's Ready).
//
// The health listener (Config.HealthListen, off by default) serves only
// GET /healthz, /readyz and /metrics, over HTTP/1.1 and without
// credentials: the port a pod exposes to kubelet probes and Prometheus,
// while the admin listener, which can gate and switch the proxy, stays on
// loopback.
//
// The admin API is guarded (see guard for the precise rules):
//   - beyond loopback it needs credentials: Config.Validate refuses a
//     non-loopback Listen without a bearer token (Config.Token) or a client
//     CA (Config.TLS.CAFile, mTLS); with either, every ProxyAdminService
//     call must present one;
//   - browsers are kept out, on loopback too: the Host header must be an IP
//     address, localhost, the listen host or one of Config.AllowedHosts
//     (DNS rebinding), a request with an Origin must come from the admin
//     server's own origin, and REST calls that change anything must be
//     Content-Type application/json (a web page can send text/plain or
//     form data cross-origin without a preflight).
//
// The package declares the Proxy interface it needs rather than importing a
// concrete type, so the proxy core stays free of any API dependency and this
// package can be tested with a fake.
package admin
