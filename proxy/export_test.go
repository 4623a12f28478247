package proxy

import (
	"fmt"
	"strings"
	"time"
)

// UsageMaxBytes is usageMaxBytes, for the report size test (package
// proxy_test, which encodes with proxy/admin).
const UsageMaxBytes = usageMaxBytes

// FillUsage records usage of one kind — "topics", "groups" or
// "transactions" — with names of size bytes, every flag and time set,
// until the bounds refuse more.
func FillUsage(p *Proxy, kind string, size int) {
	u := p.usage
	name := func(prefix string, i int) string {
		s := fmt.Sprintf("%s-%d-", prefix, i)
		return s + strings.Repeat("x", max(0, size-len(s)))
	}
	now := time.Now()
	switch kind {
	case "topics":
		for i := 0; ; i++ {
			t := u.topic(name("t", i))
			if t == nil {
				return
			}
			u.touch(&t.lastProduced, now.UnixNano())
			u.touch(&t.lastFetched, now.UnixNano())
			u.touch(&t.created, now.UnixNano())
		}
	case "groups":
		for i := 0; ; i++ {
			group := name("g", i)
			u.mu.Lock()
			g := u.groupLocked(group, now)
			if g == nil {
				u.mu.Unlock()
				return
			}
			g.protocol, g.transactional = protocolConsumer, true
			for j := range maxUsageProtocolNames {
				if u.chargeLocked(stringUsageBytes(name("p", j))) {
					g.protocolNames = append(g.protocolNames, name("p", j))
				}
			}
			for j := range 20 {
				u.addLocked(group, g.instances, name("i", j))
				u.addLocked(group, g.clients, name("c", j))
			}
			u.mu.Unlock()
			for j := range 20 {
				u.issued(u.gen, group, name("m", j))
			}
		}
	case "transactions":
		for i := 0; i < maxUsageTxnIDs; i++ {
			p.pids.txns.producerLocked(name("x", i))
		}
		u.mu.Lock()
		for i := 0; i < maxUsageTxnIDs; i++ {
			for j := range 3 {
				u.txnCommitLocked(name("x", i), name("g", j), now)
			}
		}
		u.mu.Unlock()
	}
}
