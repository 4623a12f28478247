package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// maxReviewBytes bounds an AdmissionReview body. The API server sends at
// most its 3 MiB request limit plus the review envelope.
const maxReviewBytes = 4 << 20

// AdmissionReview is admission.k8s.io/v1 AdmissionReview, the fields used.
type AdmissionReview struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Request    *AdmissionRequest  `json:"request,omitempty"`
	Response   *AdmissionResponse `json:"response,omitempty"`
}

// AdmissionRequest is the request of an AdmissionReview, the fields used.
type AdmissionRequest struct {
	UID       string           `json:"uid"`
	Kind      GroupVersionKind `json:"kind"`
	Namespace string           `json:"namespace,omitempty"`
	Operation string           `json:"operation"`
	Object    json.RawMessage  `json:"object,omitempty"`
	DryRun    *bool            `json:"dryRun,omitempty"`
}

// GroupVersionKind names the kind of the admitted object.
type GroupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// AdmissionResponse is the response of an AdmissionReview.
type AdmissionResponse struct {
	UID       string  `json:"uid"`
	Allowed   bool    `json:"allowed"`
	Result    *Status `json:"status,omitempty"`
	PatchType string  `json:"patchType,omitempty"`
	// Patch is the JSON patch; encoding/json writes []byte as base64, as
	// the API expects.
	Patch    []byte   `json:"patch,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Status explains a denial.
type Status struct {
	Code    int32  `json:"code"`
	Message string `json:"message"`
}

// Handler serves AdmissionReview v1 requests: it answers every well-formed
// review with allowed (and a patch when the pod is injected) or, for a pod
// annotated for injection that cannot be injected, a denial naming the
// fault. A body that is not an AdmissionReview v1 with a request gets HTTP
// 400. Safe for concurrent use.
type Handler struct {
	cfg     Config
	log     *zap.Logger
	reviews *prometheus.CounterVec // result
}

// Results counted by switchyard_injector_admissions_total.
const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultDenied   = "denied"
	resultInvalid  = "invalid"
)

// NewHandler validates cfg and returns a Handler; its metrics are
// registered on reg. A nil log logs nothing.
func NewHandler(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("injector config: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	h := &Handler{cfg: cfg, log: log,
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "switchyard", Subsystem: "injector",
			Name: "admissions_total", Help: "AdmissionReviews answered, by result (injected, skipped, denied, invalid)."}, []string{"result"}),
	}
	for _, r := range []string{resultInjected, resultSkipped, resultDenied, resultInvalid} {
		h.reviews.WithLabelValues(r) // export zeros, so rates and alerts see the series
	}
	if err := reg.Register(h.reviews); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "admission review: method %s: want POST", r.Method)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			h.fail(w, http.StatusUnsupportedMediaType, "admission review: content type %q: want application/json", ct)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		h.fail(w, http.StatusBadRequest, "admission review: read body: %v", err)
		return
	}
	review, err := decodeReview(body)
	if err != nil {
		h.fail(w, http.StatusBadRequest, "admission review: %v", err)
		return
	}
	resp := h.admit(review.Request)
	out, err := json.Marshal(AdmissionReview{APIVersion: review.APIVersion, Kind: review.Kind, Response: resp})
	if err != nil {
		h.fail(w, http.StatusInternalServerError, "admission review: encode response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// decodeReview parses an AdmissionReview v1 that carries a request.
func decodeReview(body []byte) (*AdmissionReview, error) {
	var review AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("apiVersion %q kind %q: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, errors.New("no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("request.uid: empty")
	}
	return &review, nil
}

// admit decides one request. Anything but the creation of a core/v1 Pod is
// allowed unchanged (the webhook configuration should not send it).
func (h *Handler) admit(req *AdmissionRequest) *AdmissionResponse {
	resp := &AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind != (GroupVersionKind{Version: "v1", Kind: "Pod"}) || req.Operation != "CREATE" {
		h.reviews.WithLabelValues(resultSkipped).Inc()
		return resp
	}
	var pod Pod
	if err := json.Unmarshal(req.Object, &pod); err != nil {
		h.reviews.WithLabelValues(resultInvalid).Inc()
		return deny(resp, http.StatusBadRequest, fmt.Sprintf("switchyard injector: decode pod: %v", err))
	}
	log := h.log.With(zap.String("uid", req.UID), zap.String("pod", podName(&pod, req.Namespace)))
	patch, err := Inject(&pod, req.Namespace, h.cfg)
	if err != nil {
		h.reviews.WithLabelValues(resultDenied).Inc()
		log.Warn("injection denied", zap.Error(err))
		return deny(resp, http.StatusUnprocessableEntity, "switchyard injector: "+err.Error())
	}
	if patch == nil {
		h.reviews.WithLabelValues(resultSkipped).Inc()
		return resp
	}
	raw, err := json.Marshal(patch)
	if err != nil {
		h.reviews.WithLabelValues(resultInvalid).Inc()
		return deny(resp, http.StatusInternalServerError, fmt.Sprintf("switchyard injector: encode patch: %v", err))
	}
	h.reviews.WithLabelValues(resultInjected).Inc()
	log.Info("sidecar injected", zap.String("app", appName(&pod, h.cfg)))
	resp.PatchType = "JSONPatch"
	resp.Patch = raw
	return resp
}

func deny(resp *AdmissionResponse, code int32, msg string) *AdmissionResponse {
	resp.Allowed = false
	resp.Result = &Status{Code: code, Message: msg}
	return resp
}

// fail answers a request that is not a usable AdmissionReview.
func (h *Handler) fail(w http.ResponseWriter, code int, format string, args ...any) {
	h.reviews.WithLabelValues(resultInvalid).Inc()
	msg := fmt.Sprintf(format, args...)
	h.log.Warn("bad admission request", zap.Int("code", code), zap.String("error", msg))
	http.Error(w, msg, code)
}
