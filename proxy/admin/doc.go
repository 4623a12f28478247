// Package admin serves a proxy's local admin API: it adapts the proxy core's
// small Go API (status, switch, gates, readiness) to the outside world.
//
// One listener (127.0.0.1:9190 by default) carries all of it:
//   - gRPC: switchyard.v1.ProxyAdminService and grpc.health.v1.Health;
//   - REST/JSON for the same service through grpc-gateway: GET /v1/status,
//     POST /v1/switch, PUT /v1/gates, DELETE /v1/gates;
//   - GET /v1/openapi.json, the OpenAPI (Swagger 2.0) document of that REST API;
//   - GET /metrics (Prometheus), GET /healthz (liveness), GET /readyz
//     (readiness, from the proxy's Ready).
//
// The package declares the Proxy interface it needs rather than importing a
// concrete type, so the proxy core stays free of any API dependency and this
// package can be tested with a fake.
//
// The API is unauthenticated: it is meant for loopback, beside the proxy in
// the same pod or host. Exposing it further needs something in front that
// authenticates.
package admin
