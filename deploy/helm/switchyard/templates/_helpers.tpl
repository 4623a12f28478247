{{- define "switchyard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: switchyard
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "switchyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "switchyard.injector.name" -}}
{{ include "switchyard.fullname" . }}-injector
{{- end -}}

{{- define "switchyard.injector.selectorLabels" -}}
app.kubernetes.io/name: switchyard-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchyard.control.name" -}}
{{ include "switchyard.fullname" . }}-control
{{- end -}}

{{- define "switchyard.control.selectorLabels" -}}
app.kubernetes.io/name: switchyard-control
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The control plane's address as sidecars dial it: its Service. */ -}}
{{- define "switchyard.control.address" -}}
{{ include "switchyard.control.name" . }}.{{ .Release.Namespace }}.svc:{{ .Values.controlPlane.port }}
{{- end -}}

{{- /* Where the injected sidecars connect: injector.sidecar.control.address,
else this release's control plane when enabled, else nowhere (""). */ -}}
{{- define "switchyard.sidecar.controlAddress" -}}
{{- with .Values.injector.sidecar.control -}}
{{- if .enabled -}}
{{- if .address -}}
{{ .address }}
{{- else if $.Values.controlPlane.enabled -}}
{{ include "switchyard.control.address" $ }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
