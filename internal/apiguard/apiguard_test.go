package apiguard

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTokenComparisonHidesLength: whatever is tried, only fixed-size
// digests are compared, once with every token, so timing tells neither the
// length of a token nor which one matched.
func TestTokenComparisonHidesLength(t *testing.T) {
	tokens := NewTokens("short", strings.Repeat("long-token-", 20), "mid-sized-token")
	var sizes [][2]int
	tokens.compare = func(a, b []byte) int {
		sizes = append(sizes, [2]int{len(a), len(b)})
		return subtle.ConstantTimeCompare(a, b)
	}
	for _, tc := range []struct {
		name, tried string
		want        int
	}{
		{"empty", "", -1},
		{"one byte", "x", -1},
		{"a prefix of a token", "sho", -1},
		{"longer than every token", strings.Repeat("z", 1000), -1},
		{"the first", "short", 0},
		{"the second", strings.Repeat("long-token-", 20), 1},
		{"the last", "mid-sized-token", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sizes = nil
			if got := tokens.Match(tc.tried); got != tc.want {
				t.Errorf("Match = %d, want %d", got, tc.want)
			}
			if len(sizes) != tokens.Len() {
				t.Errorf("%d comparisons, want one per token (%d)", len(sizes), tokens.Len())
			}
			for _, s := range sizes {
				if s != [2]int{sha256.Size, sha256.Size} {
					t.Errorf("compared %d with %d bytes, want two %d-byte digests", s[0], s[1], sha256.Size)
				}
			}
		})
	}
	if got := NewTokens().Match(""); got != -1 {
		t.Errorf("no tokens: Match(\"\") = %d, want -1", got)
	}
}

func TestBearer(t *testing.T) {
	for in, want := range map[string]struct {
		tok string
		ok  bool
	}{"Bearer abc": {"abc", true}, "Basic abc": {"", false}, "bearer abc": {"", false}, "Bearer ": {"", true}} {
		if tok, ok := Bearer(in); (tok != want.tok && want.ok) || ok != want.ok {
			t.Errorf("Bearer(%q) = %q, %v; want %q, %v", in, tok, ok, want.tok, want.ok)
		}
	}
}

func TestBrowser(t *testing.T) {
	b := NewBrowser(BrowserConfig{API: "test API", Listen: "api.internal:9180", AllowedHosts: []string{"Svc.NS.svc"},
		AllowedHostsSetting: "allowedHosts"})
	tlsState := &tls.ConnectionState{}
	for _, tc := range []struct {
		name string
		c    Caller
		want string // "" allowed, else a part of the PermissionDenied message
	}{
		{"loopback address", Caller{Host: "127.0.0.1:9180"}, ""},
		{"ipv6 loopback", Caller{Host: "[::1]:9180"}, ""},
		{"pod address", Caller{Host: "10.1.2.3:9180"}, ""},
		{"localhost", Caller{Host: "LOCALHOST"}, ""},
		{"name under .localhost", Caller{Host: "api.localhost:9180"}, ""},
		{"the listen host", Caller{Host: "api.internal:9180"}, ""},
		{"an allowed host, case and trailing dot aside", Caller{Host: "svc.ns.svc.:9180"}, ""},
		{"same origin", Caller{Host: "127.0.0.1:9180", Origin: "http://127.0.0.1:9180", FetchSite: "same-origin"}, ""},
		{"same origin over TLS", Caller{Host: "127.0.0.1:9180", Origin: "https://127.0.0.1:9180", TLS: tlsState}, ""},
		{"typed into the address bar", Caller{Host: "127.0.0.1:9180", FetchSite: "none"}, ""},

		{"DNS rebinding", Caller{Host: "rebind.evil.example:9180"}, "DNS rebinding (add it to allowedHosts"},
		{"a name that only starts like localhost", Caller{Host: "localhost.evil.example"}, "DNS rebinding"},
		{"no host", Caller{}, "DNS rebinding"},
		{"foreign origin", Caller{Host: "127.0.0.1:9180", Origin: "http://evil.example"}, "is not this test API's"},
		{"null origin", Caller{Host: "127.0.0.1:9180", Origin: "null"}, "cross-origin"},
		{"other port", Caller{Host: "127.0.0.1:9180", Origin: "http://127.0.0.1:3000"}, "cross-origin"},
		{"https origin over plaintext", Caller{Host: "127.0.0.1:9180", Origin: "https://127.0.0.1:9180"}, "cross-origin"},
		{"cross-site fetch", Caller{Host: "127.0.0.1:9180", FetchSite: "cross-site"}, "sec-fetch-site"},
		{"same-site fetch", Caller{Host: "127.0.0.1:9180", FetchSite: "same-site"}, "sec-fetch-site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Check(tc.c)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want PermissionDenied with %q", err, tc.want)
			}
		})
	}
}

func TestCheckContentType(t *testing.T) {
	for _, tc := range []struct {
		method, ct, body string
		ok               bool
	}{
		{"GET", "", "", true},
		{"POST", "application/json", "{}", true},
		{"POST", "application/json; charset=utf-8", "{}", true},
		{"PUT", "text/plain;charset=UTF-8", "{}", false},
		{"POST", "application/x-www-form-urlencoded", "a=b", false},
		{"PATCH", "multipart/form-data; boundary=x", "", false},
		{"POST", "", "{}", false},
		{"DELETE", "", "", true},
		{"DELETE", "text/plain", "x", false},
	} {
		r := httptest.NewRequest(tc.method, "/v1/x", strings.NewReader(tc.body))
		if tc.ct != "" {
			r.Header.Set("Content-Type", tc.ct)
		}
		err := CheckContentType(r)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "application/json")) {
			t.Errorf("%s %q: %v, want ok=%v", tc.method, tc.ct, err, tc.ok)
		}
	}
}

func TestWriteStatus(t *testing.T) {
	w := httptest.NewRecorder()
	WriteStatus(w, http.StatusForbidden, status.Error(codes.PermissionDenied, `origin "x" refused`))
	if w.Code != 403 || w.Header().Get("Content-Type") != "application/json" ||
		strings.TrimSpace(w.Body.String()) != `{"code":7,"message":"origin \"x\" refused"}` {
		t.Errorf("got %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}
