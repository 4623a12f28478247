// Package saslserver is the server side of SASL PLAIN (RFC 4616) and
// SCRAM-SHA-256/512 (RFC 5802, RFC 7677): it checks what a client sends
// against a local user list, so the proxy can terminate its clients'
// authentication and authenticate upstream with credentials of its own.
package saslserver
