{{/*
Names, labels and the webhook certificate's subject names, shared by every template.
*/}}

{{- define "credbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name when the release name does not contain it. */}}
{{- define "credbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "credbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "credbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "credbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "credbridge.labels" -}}
helm.sh/chart: {{ include "credbridge.chart" . }}
{{ include "credbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: credbridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "credbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "credbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "credbridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "credbridge.serviceName" -}}
{{- include "credbridge.fullname" . }}
{{- end }}

{{- define "credbridge.webhookCertSecretName" -}}
{{- printf "%s-webhook-cert" (include "credbridge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Directory where the serving certificate is mounted in the pod. */}}
{{- define "credbridge.webhookCertDir" -}}
/etc/credbridge/webhook
{{- end }}

{{/*
Subject alternative names of the serving certificate, as JSON {"dns": [...], "ips": [...]}:
the Service's DNS names, the host of webhook.url, and webhook.extraSANs split into IPs and names.
*/}}
{{- define "credbridge.webhookSANs" -}}
{{- $svc := include "credbridge.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $ips := list }}
{{- $extra := .Values.webhook.extraSANs }}
{{- with .Values.webhook.url }}
{{- $extra = prepend $extra (urlParse .).hostname }}
{{- end }}
{{- range $extra }}
{{- $san := trimAll "[]" . }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+){3}$|:" $san }}
{{- $ips = append $ips $san }}
{{- else }}
{{- $dns = append $dns $san }}
{{- end }}
{{- end }}
{{- dict "dns" ($dns | uniq) "ips" ($ips | uniq) | toJson }}
{{- end }}

{{/*
Fingerprint of the certificate's subject names: stored on the certificate Secret (a change makes
the chart issue a new certificate) and on the pod template (so the pods restart and load it).
*/}}
{{- define "credbridge.webhookSANsHash" -}}
{{- include "credbridge.webhookSANs" . | sha256sum | trunc 16 }}
{{- end }}

{{/* URL injected Pods reach the workload read endpoint at: the Service's cluster DNS name. */}}
{{- define "credbridge.endpointURL" -}}
{{- if .Values.endpoint.url }}
{{- .Values.endpoint.url }}
{{- else }}
{{- printf "https://%s.%s.svc:%d" (include "credbridge.serviceName" .) .Release.Namespace (int .Values.endpoint.port) }}
{{- end }}
{{- end }}

{{/* Image of the init container injected into Pods: injection.image, else the operator's own image. */}}
{{- define "credbridge.injectImage" -}}
{{- default (include "credbridge.image" .) .Values.injection.image }}
{{- end }}
