// Package deploy holds no code: its tests check the deployment artefacts
// beside it — the Dockerfile at the repository root, the Grafana dashboard
// and the Prometheus rules (PromQL parsed, every switchyard_* metric they
// name registered by the code) — and the Kubernetes manifests' own
// invariants. `make test-deploy` (deploy.mk) adds schema validation with
// kubeconform, kustomize and helm.
package deploy
