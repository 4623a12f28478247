package e2e

import "github.com/switchyard/switchyard/proxy"

// proxyGate holds Produce while the test copies data and switches.
func proxyGate() proxy.Gate { return proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold} }
