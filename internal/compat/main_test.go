package compat_test

import (
	"fmt"
	"log"
	"os"
	"sync"
	"testing"

	"github.com/IBM/sarama"
)

// saramaLog keeps the end of what sarama logged: sarama has one logger for
// the process (sarama.Logger), so the runs (which run one after the other)
// share it; each run resets it and shows it when it fails.
var saramaLog = &ringLog{max: 128 << 10}

func TestMain(m *testing.M) {
	sarama.Logger = log.New(saramaLog, "[sarama] ", log.Ltime|log.Lmicroseconds)
	os.Exit(m.Run())
}

// ringLog is an io.Writer keeping the first and the last max bytes
// written since the last reset; safe for concurrent use.
type ringLog struct {
	mu         sync.Mutex
	max        int
	head, tail []byte
	dropped    int
}

func (r *ringLog) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if room := r.max - len(r.head); room > 0 {
		n := min(room, len(p))
		r.head = append(r.head, p[:n]...)
		if n == len(p) {
			return len(p), nil
		}
		p = p[n:]
	}
	r.tail = append(r.tail, p...)
	if over := len(r.tail) - r.max; over > 0 {
		r.dropped += over
		r.tail = append(r.tail[:0], r.tail[over:]...)
	}
	return len(p), nil
}

func (r *ringLog) reset() {
	r.mu.Lock()
	r.head, r.tail, r.dropped = r.head[:0], r.tail[:0], 0
	r.mu.Unlock()
}

func (r *ringLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dropped == 0 {
		return string(r.head) + string(r.tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes ...]\n%s", r.head, r.dropped, r.tail)
}
