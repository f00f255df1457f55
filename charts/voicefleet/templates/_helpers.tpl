{{/*
Names and labels: the one place that builds them (STYLE: "one place that builds names").
*/}}

{{- define "voicefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: "voicefleet" for the release named voicefleet. */}}
{{- define "voicefleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voicefleet.operator.fullname" -}}{{ include "voicefleet.fullname" . }}-operator{{- end }}
{{- define "voicefleet.gateway.fullname" -}}{{ include "voicefleet.fullname" . }}-gateway{{- end }}
{{- define "voicefleet.worker.fullname" -}}{{ include "voicefleet.fullname" . }}-worker{{- end }}
{{- define "voicefleet.test.fullname" -}}{{ include "voicefleet.fullname" . }}-test{{- end }}
{{/* The workers' credentials Secret the operator keeps in the sessions namespace. */}}
{{- define "voicefleet.worker.secretName" -}}{{ include "voicefleet.fullname" . }}-worker-credentials{{- end }}

{{/*
Labels. No helm.sh/chart or managed-by label: the plain manifests in manifests/ are rendered
from these templates and must not claim to be managed by Helm.
*/}}
{{- define "voicefleet.labels" -}}
app.kubernetes.io/part-of: voicefleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of one component: dict "ctx" $ "component" "operator". */}}
{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" .ctx }}-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{- define "voicefleet.componentLabels" -}}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: voicefleet
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}

{{/* image reference: dict "image" .Values.operator.image "ctx" $ */}}
{{- define "voicefleet.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "voicefleet.livekit.workerUrl" -}}{{ default .Values.livekit.url .Values.livekit.workerUrl }}{{- end }}
{{- define "voicefleet.letta.workerUrl" -}}{{ default .Values.letta.url .Values.letta.workerUrl }}{{- end }}

{{/* LIVEKIT_API_KEY / LIVEKIT_API_SECRET from the user's Secret. */}}
{{- define "voicefleet.livekit.secretEnv" -}}
- name: LIVEKIT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiKeyKey }}
- name: LIVEKIT_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiSecretKey }}
{{- end }}

{{- define "voicefleet.letta.secretEnv" -}}
{{- if .Values.letta.existingSecret -}}
- name: LETTA_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.letta.existingSecret }}
      key: {{ .Values.letta.apiKeyKey }}
{{- end }}
{{- end }}
