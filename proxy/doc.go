// Package proxy is Switchyard's wire-level Kafka proxy core.
//
// A Proxy presents Kafka clients with a virtual cluster: a bootstrap
// listener and one local listener per virtual broker. Each virtual broker is
// mapped to a real broker of the active upstream cluster. Every response that
// names brokers, topic ids, leader epochs or the cluster id is rewritten so
// that a client only ever sees virtual, stable values, and requests carrying
// them are translated back. Because of that, Switch can move every client to
// another cluster without the client noticing more than a leader change.
//
// Gates block chosen API keys for this proxy, either rejecting requests with
// a retriable error (REJECT) or parking them until the gate lifts (HOLD).
//
// The package imports nothing of the control plane, the mirror or the API
// definitions: adapters in sub-packages (proxy/admin) expose it.
package proxy
