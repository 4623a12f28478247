package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRunExitCodes: 0 for success and --help, 2 for usage and configuration
// errors, with a message that names what is wrong. None of these starts a
// proxy.
func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantStdout string
		wantStderr []string
	}{
		{name: "no command", code: 2, wantStderr: []string{"Usage: switchyard <command>"}},
		{name: "unknown command", args: []string{"mirrror"}, code: 2, wantStderr: []string{`unknown command "mirrror"`}},
		{name: "version", args: []string{"version"}, code: 0, wantStdout: "switchyard "},
		{name: "help", args: []string{"help"}, code: 0, wantStdout: "Commands:"},
		{name: "proxy --help", args: []string{"proxy", "--help"}, code: 0, wantStderr: []string{"Usage: switchyard proxy", "-forbidden-api-keys"}},
		{name: "proxy -h", args: []string{"proxy", "-h"}, code: 0, wantStderr: []string{"Usage: switchyard proxy"}},
		{name: "proxy with an unknown flag", args: []string{"proxy", "--bogus"}, code: 2, wantStderr: []string{"-bogus"}},
		{name: "proxy with a bad duration flag", args: []string{"proxy", "--cluster", "a=kafka:9092", "--drain-timeout", "soon"}, code: 2,
			wantStderr: []string{"switchyard proxy: --drain-timeout", "soon"}},
		{name: "proxy with a bad duration in env", args: []string{"proxy", "--cluster", "a=kafka:9092"},
			env: map[string]string{"SWITCHYARD_DRAIN_TIMEOUT": "5"}, code: 2, wantStderr: []string{"SWITCHYARD_DRAIN_TIMEOUT"}},
		{name: "proxy without a cluster", args: []string{"proxy"}, code: 2, wantStderr: []string{"clusters"}},
		{name: "proxy with a bad log level", args: []string{"proxy", "--cluster", "a=kafka:9092", "--log-level", "loud"}, code: 2,
			wantStderr: []string{"log-level", "loud"}},
		{name: "demo with an unknown flag", args: []string{"demo", "--bogus"}, code: 2, wantStderr: []string{"-bogus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, envOf(tt.env), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, code, tt.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantStdout)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestRunProxyEndToEnd runs `switchyard proxy` against two kfake clusters and
// drives it through its admin REST API: ready, status, gates, a switch;
// then cancels it and expects exit code 0.
func TestRunProxyEndToEnd(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "e2e")
	source.CreateTopic(t, topic, 1)
	target.CreateTopic(t, topic, 1)
	listen := freeAddr(t)
	admin := freeAddr(t)
	base := "http://" + admin

	args := []string{"proxy",
		"--cluster", "source=" + strings.Join(source.Bootstrap, ","),
		"--cluster", "target=" + strings.Join(target.Bootstrap, ","),
		"--active", "source", "--listen", listen, "--admin", admin,
		"--broker-port-base=-1", "--drain-timeout", "5s", "--log-level", "warn",
	}
	r := startRun(t, args, nil)
	ctx := t.Context()
	r.waitReady(base + "/readyz")

	status := func() map[string]any {
		t.Helper()
		code, body := httpDo(t, http.MethodGet, base+"/v1/status", "")
		if code != http.StatusOK {
			t.Fatalf("GET /v1/status: %d %s", code, body)
		}
		return jsonField(t, body, "status").(map[string]any)
	}
	if st := status(); st["activeCluster"] != "source" || len(st["clusters"].([]any)) != 2 {
		t.Fatalf("status before the switch: %v", st)
	}

	code, body := httpDo(t, http.MethodPut, base+"/v1/gates", `{"apiKeys":[0],"mode":"REJECT"}`)
	if code != http.StatusOK {
		t.Fatalf("PUT /v1/gates: %d %s", code, body)
	}
	if g := jsonField(t, body, "gate").(map[string]any); g["mode"] != "REJECT" || fmt.Sprint(g["apiKeys"]) != "[0]" {
		t.Errorf("PUT /v1/gates answered gate %v", g)
	}
	if g, _ := status()["gate"].(map[string]any); g["mode"] != "REJECT" {
		t.Errorf("status gate after PUT: %v", g)
	}
	if code, body := httpDo(t, http.MethodDelete, base+"/v1/gates", ""); code != http.StatusOK {
		t.Fatalf("DELETE /v1/gates: %d %s", code, body)
	}
	if g, ok := status()["gate"].(map[string]any); ok {
		if keys, _ := g["apiKeys"].([]any); len(keys) != 0 {
			t.Errorf("status gate after DELETE: %v", g)
		}
	}

	code, body = httpDo(t, http.MethodPost, base+"/v1/switch", `{"cluster":"target"}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/switch: %d %s", code, body)
	}
	if rep := jsonField(t, body, "report").(map[string]any); rep["from"] != "source" || rep["to"] != "target" || rep["applied"] == nil {
		t.Errorf("switch report %v", rep)
	}
	if st := status(); st["activeCluster"] != "target" || fmt.Sprint(st["switches"]) != "1" {
		t.Errorf("status after the switch: active %v, switches %v", st["activeCluster"], st["switches"])
	}

	// A record produced through the proxy now lands on the target.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(listen))
	if err != nil {
		t.Fatal(err)
	}
	err = cl.ProduceSync(pctx, &kgo.Record{Topic: topic, Value: []byte("after-switch")}).FirstErr()
	cl.Close()
	if err != nil {
		t.Fatalf("produce through the proxy: %v", err)
	}
	cons := target.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	for len(got) == 0 && pctx.Err() == nil {
		fs := cons.PollFetches(pctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 1 || got[0] != "after-switch" {
		t.Errorf("target holds %q, want the one record produced after the switch", got)
	}

	r.stop()
}

// running is `switchyard` run in the background by startRun.
type running struct {
	t      *testing.T
	cancel context.CancelFunc
	exited chan int
	stderr *lockedBuffer
}

// startRun runs `switchyard args...` with env in the background until
// stop (or the end of the test) cancels it.
func startRun(t *testing.T, args []string, env map[string]string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, cancel: cancel, exited: make(chan int, 1), stderr: &lockedBuffer{}}
	go func() { r.exited <- run(ctx, args, envOf(env), io.Discard, r.stderr) }()
	t.Cleanup(cancel)
	return r
}

// waitReady polls url until it answers 200, failing if the run exits first
// or 20 s pass.
func (r *running) waitReady(url string) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case code := <-r.exited:
			r.t.Fatalf("run exited with %d before %s answered; stderr:\n%s", code, url, r.stderr.String())
		default:
		}
		code, _ := httpDo(r.t, http.MethodGet, url, "")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s not 200 within 20s (last %d); stderr:\n%s", url, code, r.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels the run and expects exit code 0 within 20 s.
func (r *running) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case code := <-r.exited:
		if code != 0 {
			r.t.Errorf("run after cancel = %d, want 0; stderr:\n%s", code, r.stderr.String())
		}
	case <-time.After(20 * time.Second):
		r.t.Fatal("run did not return within 20s of cancel")
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func httpDo(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

func jsonField(t *testing.T, body []byte, key string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	v, ok := m[key]
	if !ok || v == nil {
		t.Fatalf("no %q in %s", key, body)
	}
	return v
}

// lockedBuffer is a bytes.Buffer safe for the proxy's loggers to write while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
