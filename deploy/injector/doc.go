// Package injector is Switchyard's sidecar injector: a Kubernetes mutating
// admission webhook that adds the proxy sidecar (`switchyard proxy`) to pods
// annotated switchyard.io/inject: "true".
//
// With Config.Control set, the sidecar also follows the control plane: the
// proxy's --control, --app (the application name resolved here),
// --instance (namespace/pod, from the downward API) and --control-token-file
// (a Secret of the pod's namespace, mounted into the sidecar only).
//
// Inject is a pure function from a pod and a Config to a JSON patch; Handler
// serves it as an AdmissionReview v1 endpoint. The types here are the few
// fields of the Kubernetes API the injector reads or writes, declared as
// plain JSON structs instead of importing k8s.io/api (which would bring
// k8s.io/apimachinery and a dozen more modules into the binary for them).
// The patched pods in testdata are validated against the Kubernetes
// OpenAPI schemas by `make test-deploy`.
package injector
