# Deployment artefacts: Kubernetes manifests, Helm chart, dashboard, alert
# rules, Dockerfile. Included from the top-level Makefile, which defines GO
# and TOOLS (bin/tools, on PATH).
#
#   make test-deploy    validate all of it (installs the pinned tools first)
#   make tools-deploy   install the tools only
#
# What is validated, without a cluster, a Docker engine or GitHub:
#   - kustomize build of deploy/kubernetes/base and .../control-plane;
#   - kubeconform -strict on those, on the ctl pod, on the pods the injector
#     produces (deploy/injector/testdata/*.patched.json) and on `helm
#     template` of the chart in five configurations (one with TLS and mTLS,
#     one with the applications' NetworkPolicy), against JSON schemas
#     generated from the OpenAPI document of each Kubernetes version in
#     KUBE_SCHEMA_VERSIONS (deploy/tools/kubeschema; the document comes from
#     the k8s.io/kubernetes module on the Go module proxy). cert-manager's
#     Certificate and Issuer have no schema here and are skipped by name;
#   - helm lint, default and all-features values (the control plane with
#     helm/switchyard/ci/control-plane-values.yaml);
#   - go test ./deploy/...: the Dockerfile and .dockerignore (static), the
#     dashboards and alert rules (PromQL parsed, every metric registered by
#     the proxy, sidecar, injector, mirror or control plane, every metric on
#     a panel), the injector (recorded AdmissionReviews), the chart's
#     injector config accepted by `switchyard inject`, the manifests' wiring
#     (control plane, Service, token, store, NetworkPolicy, sidecar flags)
#     and a run of the control plane, the sidecar and `switchyard ctl` with
#     the manifests' args, config and probes on kfake clusters, through a
#     first cutover (kustomize and Helm).
# Not validated here: admission by a real API server (defaulting, webhooks,
# Pod Security), the image build itself, Grafana's rendering, alert timing.

KUBECONFORM_VERSION  := v0.8.0
HELM_VERSION         := v3.22.0
KUSTOMIZE_VERSION    := v5.8.1
# The oldest Kubernetes the manifests support (native sidecars: 1.29) and
# the newest release on the module proxy.
KUBE_SCHEMA_VERSIONS := v1.29.15 v1.37.0
KUBE_SCHEMAS         := $(TOOLS)/kube-schemas
DEPLOY_OUT           := $(CURDIR)/bin/deploy
# helm built with go install assumes Kubernetes v1.20 for .Capabilities;
# render for the oldest and the newest supported versions instead.
KUBE_OLDEST          := $(firstword $(KUBE_SCHEMA_VERSIONS))
KUBE_NEWEST          := $(lastword $(KUBE_SCHEMA_VERSIONS))
# The control plane needs clusters: placeholder values for lint and template.
HELM_CONTROL_VALUES  := deploy/helm/switchyard/ci/control-plane-values.yaml

.PHONY: test-deploy tools-deploy deploy-kustomize deploy-kubeconform deploy-helm deploy-go

test-deploy: deploy-kubeconform deploy-helm deploy-go
	@echo "make test-deploy: manifests, chart, dashboard, alerts and Dockerfile checked"

tools-deploy: $(TOOLS)/.kubeconform-$(KUBECONFORM_VERSION) $(TOOLS)/.helm-$(HELM_VERSION) \
	$(TOOLS)/.kustomize-$(KUSTOMIZE_VERSION) $(foreach v,$(KUBE_SCHEMA_VERSIONS),$(KUBE_SCHEMAS)/$(v)/.done)

# Each tool is reinstalled when its pinned version changes (stamp files).
$(TOOLS)/.kubeconform-$(KUBECONFORM_VERSION):
	GOBIN=$(TOOLS) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	@touch $@
$(TOOLS)/.helm-$(HELM_VERSION):
	GOBIN=$(TOOLS) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@
$(TOOLS)/.kustomize-$(KUSTOMIZE_VERSION):
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@
$(KUBE_SCHEMAS)/%/.done: deploy/tools/kubeschema/main.go
	$(GO) run ./deploy/tools/kubeschema -kubernetes $* -out $(KUBE_SCHEMAS)/$*
	@touch $@

deploy-kustomize: tools-deploy
	@mkdir -p $(DEPLOY_OUT)
	kustomize build deploy/kubernetes/base > $(DEPLOY_OUT)/base.yaml
	kustomize build deploy/kubernetes/control-plane > $(DEPLOY_OUT)/control-plane.yaml

deploy-helm: tools-deploy
	@mkdir -p $(DEPLOY_OUT)
	helm lint --strict deploy/helm/switchyard
	helm lint --strict deploy/helm/switchyard -f $(HELM_CONTROL_VALUES) --set injector.tls.certManager.enabled=true \
		--set appNetworkPolicy.enabled=true --set 'appNetworkPolicy.namespaces={shop}'
	helm template sy deploy/helm/switchyard -n switchyard --kube-version $(KUBE_NEWEST) > $(DEPLOY_OUT)/helm-default.yaml
	helm template sy deploy/helm/switchyard -n switchyard --kube-version $(KUBE_OLDEST) -f $(HELM_CONTROL_VALUES) \
		--set injector.tls.certManager.enabled=true > $(DEPLOY_OUT)/helm-all.yaml
	helm template sy deploy/helm/switchyard -n switchyard --kube-version $(KUBE_NEWEST) --set injector.sidecar.nativeSidecar=false \
		--set injector.failurePolicy=Ignore --set injector.replicas=1 -f $(HELM_CONTROL_VALUES) \
		--set controlPlane.persistence.enabled=false --set controlPlane.networkPolicy.kafkaTo=null > $(DEPLOY_OUT)/helm-plain.yaml
	helm template sy deploy/helm/switchyard -n switchyard --kube-version $(KUBE_NEWEST) -f $(HELM_CONTROL_VALUES) \
		--set controlPlane.tls.enabled=true --set controlPlane.tls.clientCA=true --set controlPlane.tls.clientCertOptional=false \
		--set controlPlane.auditFile=/var/lib/switchyard/audit.jsonl \
		--set injector.sidecar.control.tlsSecret=switchyard-control-ca --set injector.sidecar.control.tlsClientCert=true \
		> $(DEPLOY_OUT)/helm-tls.yaml
	helm template sy deploy/helm/switchyard -n switchyard --kube-version $(KUBE_OLDEST) --set appNetworkPolicy.enabled=true \
		--set 'appNetworkPolicy.namespaces={shop,payments}' --set 'appNetworkPolicy.ingress[0].ports[0].port=8080' \
		> $(DEPLOY_OUT)/helm-app-networkpolicy.yaml

deploy-kubeconform: deploy-kustomize deploy-helm
	@set -e; for v in $(KUBE_SCHEMA_VERSIONS); do \
		echo "kubeconform: Kubernetes $$v"; \
		kubeconform -strict -summary -skip Certificate,Issuer \
			-schema-location '$(KUBE_SCHEMAS)/'"$$v"'/{{.ResourceKind}}{{.KindSuffix}}.json' \
			$(DEPLOY_OUT)/*.yaml deploy/kubernetes/control-plane/ctl-pod.yaml deploy/injector/testdata/*.patched.json; \
	done

deploy-go: tools-deploy
	HELM=$(TOOLS)/helm GO=$(GO) $(GO) test -count=1 ./deploy/... ./cmd/switchyard -run 'Inject|Docker|Alert|Dashboard|Metrics|Helm|Manifests'
