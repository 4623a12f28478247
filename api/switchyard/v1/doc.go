// Package switchyardv1 is version 1 of Switchyard's public API: the protobuf
// messages and services of package switchyard.v1, and the Go code generated
// from them (messages, gRPC clients and servers, grpc-gateway REST handlers)
// together with the OpenAPI document describing the REST side.
//
// Everything except doc.go and openapi.go is generated from the .proto files
// by `make generate` (buf with local plugins, configured in api/buf.gen.yaml);
// do not edit it by hand. HTTP bindings live in *_http.yaml files next to the
// .proto files, not in google.api.http annotations, because the Buf Schema
// Registry that would supply google/api/annotations.proto is not reachable.
// `make check-generate` fails when the committed code is stale.
package switchyardv1
