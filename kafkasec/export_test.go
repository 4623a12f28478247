package kafkasec

import "time"

// RoundTrip exposes the raw request writer to the external tests.
var RoundTrip = roundTrip

// DueAt exposes the renewal check at a given time.
func (c *Conn) DueAt(now time.Time) bool { return c.dueAt(now) }
