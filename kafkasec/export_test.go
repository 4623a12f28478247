package kafkasec

// RoundTrip exposes the raw request writer to the external tests.
var RoundTrip = roundTrip
