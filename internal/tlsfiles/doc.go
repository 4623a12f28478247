// Package tlsfiles turns certificate, key and CA files on disk into
// *tls.Config values that pick up rotated files without a restart.
//
// Its one job is that: the Files type names the PEM files (and the name to
// verify), Validate checks them at start with errors naming the config field,
// and ClientConfig / ServerConfig build configurations that re-read the files
// when their modification time, size or identity changes. It knows nothing
// about Kafka, gRPC or HTTP; the control plane, the sidecar's control client
// and the proxy's and mirror's upstream Kafka connections all use it.
package tlsfiles
