{{/* Names, labels and the checks shared by the templates. */}}

{{- define "latchkey.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "latchkey.fullname" -}}
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

{{- define "latchkey.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "latchkey.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latchkey.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "latchkey.labels" -}}
helm.sh/chart: {{ include "latchkey.chart" . }}
{{ include "latchkey.selectorLabels" . }}
app.kubernetes.io/version: {{ include "latchkey.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: latchkey
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "latchkey.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "latchkey.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "latchkey.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "latchkey.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "latchkey.imageTag" .) }}
{{- end }}
{{- end }}

{{/* The Secret the pods read: the chart's own, or the one named by existingSecret. */}}
{{- define "latchkey.secretName" -}}
{{- default (include "latchkey.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/* The SMTP URL from smtp.url, or built from smtp.host and friends; empty: none. */}}
{{- define "latchkey.smtpUrl" -}}
{{- $s := .Values.smtp }}
{{- if $s.url }}
{{- $s.url }}
{{- else if $s.host }}
{{- $scheme := ternary "smtps" "smtp" (eq $s.security "tls") }}
{{- $auth := "" }}
{{- if $s.username }}
{{- /* urlquery writes a space as "+"; in the user info it must be %20 (a "+" itself is %2B). */}}
{{- $auth = printf "%s:%s@" ($s.username | urlquery | replace "+" "%20") ($s.password | urlquery | replace "+" "%20") }}
{{- end }}
{{- $query := "" }}
{{- if eq $s.security "starttls" }}{{ $query = "?tls=required" }}{{ end }}
{{- if eq $s.security "opportunistic" }}{{ $query = "?tls=opportunistic" }}{{ end }}
{{- printf "%s://%s%s:%d%s" $scheme $auth $s.host (int $s.port) $query }}
{{- end }}
{{- end }}

{{/* "true" when the pods get a PostgreSQL URL (so several replicas may share it). */}}
{{- define "latchkey.hasDatabase" -}}
{{- if .Values.existingSecret.name }}
{{- if .Values.existingSecret.databaseUrlKey }}true{{ end }}
{{- else if and .Values.database.url (not (hasPrefix "sqlite:" .Values.database.url)) }}true
{{- end }}
{{- end }}

{{/* Fails the render on values that are each valid but wrong together. */}}
{{- define "latchkey.validate" -}}
{{- $v := .Values }}
{{- $hasDb := eq (include "latchkey.hasDatabase" .) "true" }}
{{- if and (gt (int $v.replicaCount) 1) (not $hasDb) }}
{{- fail (printf "replicaCount is %d, but without a PostgreSQL database (database.url or existingSecret.databaseUrlKey) latchkey runs on SQLite, which serves one replica only" (int $v.replicaCount)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (not $hasDb) }}
{{- fail "autoscaling.enabled needs a PostgreSQL database (database.url or existingSecret.databaseUrlKey): SQLite serves one replica only" }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas" }}
{{- end }}
{{- $needed := add (int $v.shutdown.delaySeconds) (int $v.shutdown.graceSeconds) 8 }}
{{- if le (int $v.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdown.delaySeconds + shutdown.graceSeconds + 3 s to stop background work + 5 s of telemetry flush (%d), or Kubernetes kills latchkey before it has drained" (int $v.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- if $v.existingSecret.name }}
{{- if or $v.database.url $v.smtp.url $v.smtp.password $v.keyEncryptionKey }}
{{- fail "existingSecret.name is set: leave database.url, smtp.url, smtp.password and keyEncryptionKey empty and put them in that Secret" }}
{{- end }}
{{- if $v.smtp.host }}
{{- fail "existingSecret.name is set: put the SMTP URL in that Secret (existingSecret.smtpUrlKey) instead of smtp.host" }}
{{- end }}
{{- end }}
{{- if and $v.smtp.url $v.smtp.host }}
{{- fail "give either smtp.url or smtp.host, not both" }}
{{- end }}
{{- if and $v.smtp.password (not $v.smtp.username) }}
{{- fail "smtp.password needs smtp.username" }}
{{- end }}
{{- if and $v.smtp.username (not $v.smtp.host) }}
{{- fail "smtp.username needs smtp.host (or put the credentials in smtp.url)" }}
{{- end }}
{{- if and $v.smtp.username (eq $v.smtp.security "none") }}
{{- fail "smtp.username with smtp.security none would send the password without TLS: use starttls or tls (or, for a relay on a network you trust, smtp.url with ?auth_without_tls=true)" }}
{{- end }}
{{- if and $v.persistence.enabled $v.autoscaling.enabled }}
{{- fail "persistence.enabled mounts one ReadWriteOnce claim: it cannot go with autoscaling.enabled" }}
{{- end }}
{{- if and $v.persistence.enabled (gt (int $v.replicaCount) 1) }}
{{- fail "persistence.enabled mounts one ReadWriteOnce claim: it allows one replica only" }}
{{- end }}
{{- if $v.podDisruptionBudget.enabled }}
{{- $max := toString $v.podDisruptionBudget.maxUnavailable }}
{{- $min := toString $v.podDisruptionBudget.minAvailable }}
{{- if eq (eq $max "") (eq $min "") }}
{{- fail "podDisruptionBudget: set exactly one of maxUnavailable and minAvailable (the other to \"\")" }}
{{- end }}
{{- end }}
{{- if and $v.httpRoute.enabled (not $v.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" }}
{{- end }}
{{- /* Last: the other guards' cases mostly leave SMTP out. */}}
{{- $hasSmtp := ternary $v.existingSecret.smtpUrlKey (include "latchkey.smtpUrl" .) (not (empty $v.existingSecret.name)) }}
{{- if and $hasDb (not $hasSmtp) (not (dig "devMailbox" false $v.config)) }}
{{- fail "a PostgreSQL database without SMTP: set smtp.url or smtp.host (or existingSecret.smtpUrlKey); outside the SQLite default latchkey refuses to start without a mail relay, unless config.devMailbox is true (development only: codes appear in the log)" }}
{{- end }}
{{- end }}

{{/* An integer or a percentage value as YAML (a number stays a number). */}}
{{- define "latchkey.intOrPercent" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int . }}{{ end }}
{{- end }}

{{/* The public paths of the JSON gateway, for the Ingress and the HTTPRoute:
     never /metrics, /healthz, /readyz or /openapi.json. Each item: path and
     whether it is a prefix. */}}
{{- define "latchkey.publicPaths" -}}
- path: /auth
  prefix: true
- path: /sessions
  prefix: true
- path: /tokens
  prefix: true
- path: /.well-known/jwks.json
  prefix: false
- path: /tenants
  prefix: true
{{- end }}

{{/* The checksum of everything that goes into the chart's Secret, from the values
     (a generated key-encryption key never changes, so it is left out). */}}
{{- define "latchkey.secretChecksum" -}}
{{- dict "db" .Values.database.url "smtp" (include "latchkey.smtpUrl" .) "kek" .Values.keyEncryptionKey | toJson | sha256sum }}
{{- end }}

{{/* The ConfigMap's data (also hashed into the pods' checksum/config annotation). */}}
{{- define "latchkey.configData" -}}
LATCHKEY_GRPC_ADDR: {{ printf "%s:50051" .Values.listenAddress | quote }}
LATCHKEY_HTTP_ADDR: {{ printf "%s:8080" .Values.listenAddress | quote }}
LATCHKEY_METRICS_ADDR: {{ printf "%s:9464" .Values.listenAddress | quote }}
LATCHKEY_DATA_DIR: "/var/lib/latchkey"
LATCHKEY_LOG: {{ .Values.log.level | quote }}
LATCHKEY_LOG_FORMAT: {{ .Values.log.format | quote }}
LATCHKEY_SHUTDOWN_DELAY: {{ printf "%ds" (int .Values.shutdown.delaySeconds) | quote }}
LATCHKEY_SHUTDOWN_GRACE: {{ printf "%ds" (int .Values.shutdown.graceSeconds) | quote }}
{{- range $key, $value := .Values.config }}
{{- $env := printf "LATCHKEY_%s" ($key | snakecase | upper) }}
{{- if kindIs "slice" $value }}
{{ $env }}: {{ join "," $value | quote }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{ $env }}: {{ int64 $value | toString | quote }}
{{- else }}
{{ $env }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- with .Values.telemetry }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
OTEL_SERVICE_NAME: {{ default "latchkey" .serviceName | quote }}
{{- end }}
{{- end }}
{{- end }}
