// Package deploy holds no code: its tests check the deployment artefacts
// beside it — the Dockerfile at the repository root, the Grafana dashboards
// and the Prometheus rules (PromQL parsed, every switchyard_* metric they
// name registered by the code), the Kubernetes manifests' and the Helm
// chart's wiring (control plane, Service, token, store, NetworkPolicy,
// sidecar flags) — and run them: the control plane, a sidecar and
// `switchyard ctl` started from the manifests' args and configuration on
// in-process clusters, through a first cutover. `make test-deploy`
// (deploy.mk) adds schema validation with kubeconform, kustomize and helm.
package deploy
