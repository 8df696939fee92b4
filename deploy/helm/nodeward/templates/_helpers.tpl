{{/* Labels on every object's metadata. */}}
{{- define "nodeward.labels" -}}
app.kubernetes.io/part-of: nodeward
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "nodeward.agentSelector" -}}
app.kubernetes.io/name: nodeward-agent
app.kubernetes.io/component: agent
{{- end }}

{{- define "nodeward.collectorSelector" -}}
app.kubernetes.io/name: nodeward-collector
app.kubernetes.io/component: collector
{{- end }}

{{- define "nodeward.agentLabels" -}}
{{ include "nodeward.agentSelector" . }}
{{ include "nodeward.labels" . }}
{{- end }}

{{- define "nodeward.collectorLabels" -}}
{{ include "nodeward.collectorSelector" . }}
{{ include "nodeward.labels" . }}
{{- end }}

{{- define "nodeward.collectorAddress" -}}
{{ printf "collector.%s.svc:%d" .Release.Namespace (int .Values.collector.grpcPort) }}
{{- end }}
