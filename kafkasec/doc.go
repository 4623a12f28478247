// Package kafkasec connects to a Kafka cluster the way its listener
// demands: TLS (custom CA, client certificate, server name, files reloaded
// when they change) and SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER,
// AWS_MSK_IAM). One cluster definition yields both franz-go client options
// (for the proxy's and the mirror's own clients) and authenticated raw
// connections (for the proxy's byte-level forwarding), including KIP-368
// re-authentication of a long-lived raw connection.
//
// Secrets (passwords, tokens, keys) are read from files or the environment,
// never logged, and never part of an error message or a String result.
package kafkasec
