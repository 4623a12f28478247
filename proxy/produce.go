package proxy

// Produce: v3-13 (every version kmsg knows).
//   * v9+:  CurrentLeader and NodeEndpoints in responses (KIP-951 tags, which
//           kmsg and brokers use at every flexible version),
//           translated; earlier responses pass through untouched.
//   * v13+: topic ids (request and response), translated.
// Requests are walked in place (fastpath.go): acks is read, because an acks=0
// Produce gets no response and must not be waited for; topic ids and, after
// a switch, record batch producer ids are patched in place.
