package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// idleConns opens n client connections to the proxy, each served one
// ApiVersions and one Metadata request (so each also holds its upstream
// connection), leaves them idle, and reports the proxy's RSS before and
// after. The connections are closed when it returns.
func idleConns(proxyPID int, listen string, n int) (string, error) {
	before, _, err := procMem(proxyPID)
	if err != nil {
		return "", err
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("idle"))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 12
	for i := range n {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		for j, req := range []kmsg.Request{kmsg.NewPtrApiVersionsRequest(), meta} {
			if _, err := c.Write(f.AppendRequest(nil, req, int32(j))); err != nil {
				return "", fmt.Errorf("connection %d: write: %w", i, err)
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var sz [4]byte
			if _, err := io.ReadFull(c, sz[:]); err != nil {
				return "", fmt.Errorf("connection %d: read: %w", i, err)
			}
			if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(sz[:]))); err != nil {
				return "", fmt.Errorf("connection %d: read: %w", i, err)
			}
		}
	}
	after, _, err := procMem(proxyPID)
	if err != nil {
		return "", err
	}
	st, _ := procStatus(proxyPID)
	report := fmt.Sprintf("## Idle client connections\n\n"+
		"| connections | proxy RSS before | RSS with them open | per connection | RssAnon after |\n|---|---|---|---|---|\n"+
		"| %d | %.1f MiB | %.1f MiB | %.1f KiB | %.1f MiB |\n",
		n, mib(before), mib(after), float64(after-before)/1024/float64(n), mib(st["RssAnon"]))
	fmt.Fprint(os.Stderr, report)
	return report, nil
}
