{{/*
Where the API reads RabbitMQ's management API for the dashboard: api.managementUrl, else the
bundled RabbitMQ's while the dashboard is on (an admin token Secret is named), else nowhere.
*/}}
{{- define "warren.api.managementUrl" -}}
{{- if .Values.api.managementUrl -}}
{{- .Values.api.managementUrl -}}
{{- else if and .Values.rabbitmq.enabled .Values.api.adminToken.existingSecret -}}
{{- printf "http://%s:15672" (include "warren.broker.host" .) -}}
{{- end -}}
{{- end }}

{{/* The components whose pods serve Warren's /metrics on the port named "metrics". */}}
{{- define "warren.metrics.components" -}}
{{- $components := list "worker" -}}
{{- if .Values.api.enabled }}{{ $components = append $components "api" }}{{ end -}}
{{- if .Values.operator.enabled }}{{ $components = append $components "operator" }}{{ end -}}
{{- toJson $components -}}
{{- end }}
