{{/* Names and labels shared by every template. */}}

{{- define "kubenas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubenas.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubenas.labels" -}}
{{ include "kubenas.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubenas
{{- end -}}

{{- define "kubenas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubenas.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Pushgateway trainers push to: the bundled one, else the configured address. */}}
{{- define "kubenas.pushgatewayURL" -}}
{{- if .Values.pushgateway.bundled.enabled -}}
{{- printf "http://%s-pushgateway.%s.svc:%d" (include "kubenas.fullname" .) .Release.Namespace (int .Values.pushgateway.bundled.port) -}}
{{- else -}}
{{- .Values.pushgateway.url -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in a namespace it watches (measured from the API server's audit
log by tests/e2e/test_chart.py: every verb here is used, none is missing). */}}
{{- define "kubenas.namespacedRules" -}}
# patch: only to drop the finalizer older operator versions put on experiments.
- apiGroups: [kubenas.io]
  resources: [nasexperiments]
  verbs: [get, list, watch, patch]
- apiGroups: [kubenas.io]
  resources: [nasexperiments/status, nastrials/status]
  verbs: [patch]
- apiGroups: [kubenas.io]
  resources: [nastrials]
  verbs: [get, list, watch, create]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# A screen trial's scores: read from its pod's log, kept in ConfigMaps it owns.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
# Trial reuse: each experiment's worker token, which its worker pods show the operator.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
