package apiguard

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Caller is what the checks look at in a request, read from an HTTP
// request (REST) or from a gRPC call's metadata and peer, so the same rules
// hold for both.
type Caller struct {
	Host          string               // Host header, or :authority
	Origin        string               // Origin header, "" if absent
	FetchSite     string               // Sec-Fetch-Site header, "" if absent
	Authorization string               // Authorization header, "" if absent
	TLS           *tls.ConnectionState // nil over plaintext
}

// CallerOfRequest reads the caller of an HTTP request.
func CallerOfRequest(r *http.Request) Caller {
	return Caller{
		Host:          r.Host,
		Origin:        r.Header.Get("Origin"),
		FetchSite:     r.Header.Get("Sec-Fetch-Site"),
		Authorization: r.Header.Get("Authorization"),
		TLS:           r.TLS,
	}
}

// CallerOfContext reads the caller of a gRPC call from its incoming
// metadata and peer.
func CallerOfContext(ctx context.Context) Caller {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(key string) string {
		if v := md.Get(key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c := Caller{
		Host:          first(":authority"),
		Origin:        first("origin"),
		FetchSite:     first("sec-fetch-site"),
		Authorization: first("authorization"),
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.TLS = &info.State
		}
	}
	return c
}

// BrowserConfig configures Browser.
type BrowserConfig struct {
	// API names the API in errors, e.g. "admin API".
	API string
	// Listen is the API's listen address; its host is a name the API may
	// be dialled by.
	Listen string
	// AllowedHosts are further names the Host header may carry.
	AllowedHosts []string
	// AllowedHostsSetting names, in errors, the setting that lists
	// AllowedHosts, e.g. "--admin-allowed-hosts".
	AllowedHostsSetting string
}

// Browser keeps web browsers out of an API. It is read-only after
// construction and safe for concurrent use.
type Browser struct {
	api, setting string
	listenHost   string
	allowedHosts map[string]bool
}

// NewBrowser builds a Browser from cfg.
func NewBrowser(cfg BrowserConfig) *Browser {
	b := &Browser{api: cfg.API, setting: cfg.AllowedHostsSetting, allowedHosts: map[string]bool{}}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		b.listenHost = strings.ToLower(host)
	}
	for _, h := range cfg.AllowedHosts {
		b.allowedHosts[strings.ToLower(h)] = true
	}
	return b
}

// CheckHost refuses DNS rebinding: the host part of c.Host must be an IP
// address, "localhost" or a name under ".localhost", the listen host, or an
// allowed host. A web page that rebinds its own name to 127.0.0.1 still
// sends that name. The error is PermissionDenied.
func (b *Browser) CheckHost(c Caller) error {
	host := c.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	switch {
	case net.ParseIP(host) != nil, host == "localhost", strings.HasSuffix(host, ".localhost"),
		host != "" && host == b.listenHost, b.allowedHosts[host]:
		return nil
	}
	return status.Errorf(codes.PermissionDenied,
		"host %q is not an IP address, localhost or the %s's address: refused as DNS rebinding (add it to %s to dial by that name)",
		c.Host, b.api, b.setting)
}

// CheckOrigin refuses cross-origin requests: a request that carries an
// Origin must come from the API's own origin (http or https, by the
// connection, plus the request's Host), and a Sec-Fetch-Site header, when
// present, must be "same-origin" or "none". The error is PermissionDenied.
func (b *Browser) CheckOrigin(c Caller) error {
	if c.Origin != "" {
		scheme := "http"
		if c.TLS != nil {
			scheme = "https"
		}
		u, err := url.Parse(c.Origin)
		if err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, c.Host) {
			return status.Errorf(codes.PermissionDenied, "origin %q is not this %s's (%s://%s): cross-origin requests are refused",
				c.Origin, b.api, scheme, c.Host)
		}
	}
	switch c.FetchSite {
	case "", "same-origin", "none":
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "sec-fetch-site %q: cross-origin requests are refused", c.FetchSite)
}

// Check is CheckHost, then CheckOrigin.
func (b *Browser) Check(c Caller) error {
	if err := b.CheckHost(c); err != nil {
		return err
	}
	return b.CheckOrigin(c)
}

// CheckContentType refuses a REST request a page could send cross-origin
// without a preflight: POST, PUT and PATCH, and a DELETE with a body, must
// be Content-Type application/json. A grpc-gateway would decode text/plain,
// form data or multipart as JSON all the same. The error is
// InvalidArgument; answer it with 415.
func CheckContentType(r *http.Request) error {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	case http.MethodDelete:
		if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
			return nil // curl -X DELETE; a browser cannot send it cross-origin unasked
		}
	default:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return nil
	}
	return status.Errorf(codes.InvalidArgument,
		"content-type %q: %s needs Content-Type: application/json (curl: --json, or -H 'Content-Type: application/json')", ct, r.Method)
}

// WriteStatus writes err, a gRPC status error, as grpc-gateway writes its
// errors: {"code": <gRPC code>, "message": "..."}, with the HTTP status
// code.
func WriteStatus(w http.ResponseWriter, code int, err error) {
	s := status.Convert(err)
	body, _ := json.Marshal(struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}{int32(s.Code()), s.Message()}) // cannot fail: a struct of an int and a string
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "%s\n", body) // a failed write means the client left
}

// CheckRequest applies Check and CheckContentType to a REST request c was
// read from, and returns the HTTP status to answer a refusal with: 403,
// or 415 for the content type.
func (b *Browser) CheckRequest(c Caller, r *http.Request) (int, error) {
	if err := b.Check(c); err != nil {
		return http.StatusForbidden, err
	}
	if err := CheckContentType(r); err != nil {
		return http.StatusUnsupportedMediaType, err
	}
	return 0, nil
}
