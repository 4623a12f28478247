// Package apiguard holds the checks the two HTTP APIs of Switchyard — a
// sidecar's admin API (proxy/admin) and the control plane's API (control) —
// make before they serve a call: the rules that keep a web browser out, and
// the comparison of bearer tokens.
//
// A browser on a machine that runs either API on loopback (a developer's
// laptop, a kubectl port-forward) can be made by any web page to send it
// requests. Browser keeps those out: the Host must be a name the API is
// dialled by (DNS rebinding), a request that carries an Origin must come
// from the API's own origin, Sec-Fetch-Site must not say cross-site or
// same-site, and a REST call that changes something must be
// application/json (the content types a page may send cross-origin without
// asking first are text/plain, form data and multipart). curl, gRPC clients
// and Switchyard's own clients send neither Origin nor Sec-Fetch-Site.
//
// Tokens compares a bearer token with the configured ones as SHA-256
// digests, in time that depends on neither which token matched nor the
// length of any.
//
// The package knows nothing of either API: each passes in its names and
// settings, and maps the gRPC status errors returned here to its answers.
package apiguard
