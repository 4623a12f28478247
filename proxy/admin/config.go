package admin

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Listen is the host:port the admin server listens on. The default is
	// loopback because the API is unauthenticated and can switch clusters.
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds how long Serve waits, once its context is
	// cancelled, for in-flight calls (a draining Switch, say) to finish
	// before it closes the remaining connections.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
}

// DefaultConfig returns the defaults: listen on 127.0.0.1:9190 and give
// in-flight calls 15 s to finish at shutdown, longer than the proxy's default
// 10 s drain so a Switch in progress can still report its outcome.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:9190",
		ShutdownTimeout: 15 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	// An empty host (":9190") means every interface: valid, if unwise.
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("listen: port %q out of range", port)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdownTimeout: %v must be positive", c.ShutdownTimeout)
	}
	return nil
}
