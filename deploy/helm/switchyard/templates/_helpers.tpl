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
