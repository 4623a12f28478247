// Package controlclient connects a proxy sidecar to the control plane's
// watch stream (switchyard.v1.SidecarService.Connect) and keeps the proxy in
// the state the control plane wants.
//
// A Client announces who the sidecar is (application, instance, labels) and
// which clusters it is configured with, receives versioned desired states
// (active cluster, gate), applies them to the proxy in version order,
// acknowledges the version it applied and reports the proxy's status: right
// after every apply and every StatusInterval in between, so a control plane
// that gated Produce sees in-flight requests drain.
//
// Fail static: when the stream breaks or the control plane cannot be
// reached, the proxy keeps the state it last applied and the Client
// reconnects with exponential backoff and jitter, announcing itself and its
// applied version again. Losing the control plane never changes where
// clients are routed.
//
// Like proxy/admin, this package is an adapter: it imports the proxy core and
// the API, the proxy core imports neither, and the Client works on the small
// Proxy interface declared here so it can be tested with a fake.
package controlclient
