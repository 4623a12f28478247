package switchyardv1

import _ "embed" // for the OpenAPI documents below

// proxyAdminOpenAPI is the document protoc-gen-openapiv2 generates for
// ProxyAdminService. It is embedded here, next to the file it comes from,
// because go:embed cannot reach outside its package's directory.
//
//go:embed proxy_admin.swagger.json
var proxyAdminOpenAPI string

// ProxyAdminOpenAPI returns the OpenAPI (Swagger 2.0, JSON) document of
// ProxyAdminService's REST bindings. Each call returns a fresh copy, so
// callers may keep or modify it.
func ProxyAdminOpenAPI() []byte { return []byte(proxyAdminOpenAPI) }

// controlOpenAPI is the document of ControlService's REST bindings.
//
//go:embed control.swagger.json
var controlOpenAPI string

// ControlOpenAPI returns the OpenAPI (Swagger 2.0, JSON) document of
// ControlService's REST bindings, a fresh copy per call.
func ControlOpenAPI() []byte { return []byte(controlOpenAPI) }
