// Package apiguardtest sends the requests the tests of apiguard's users
// need: what a browser, curl or a script would send, exactly.
package apiguardtest

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Do sends one request exactly as given — body, headers, and Host (the
// header a browser would send; the key "Host" of header) — with no
// Content-Type added, and returns the status code, the body and the
// response's HTTP major version.
func Do(t testing.TB, method, url, body string, header map[string]string) (code int, respBody string, protoMajor int) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b), resp.ProtoMajor
}
