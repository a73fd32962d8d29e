{{- define "plangate.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plangate.labels" -}}
app.kubernetes.io/name: plangate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "plangate.selector" -}}
app.kubernetes.io/name: plangate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plangate.catalogConfigMap" -}}
{{- if .Values.catalog.existingConfigMap -}}
{{ .Values.catalog.existingConfigMap }}
{{- else -}}
{{ include "plangate.name" . }}-catalog
{{- end -}}
{{- end -}}

{{- define "plangate.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq .Values.mode "shared" -}}{{- $tag = printf "%s%s" $tag .Values.image.postgresTagSuffix -}}{{- end -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}

{{- define "plangate.podAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: "8014"
  prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* The PlanGate container, the same in both modes but for its env and mounts. */}}
{{- define "plangate.container" -}}
name: plangate
image: {{ include "plangate.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: [serve]
env:
  - name: PLANGATE_CATALOG
    value: /etc/plangate/catalog.yaml
  - name: PLANGATE_MANAGEMENT_HOST
    value: 0.0.0.0
  - name: PLANGATE_ENVIRONMENT
    value: {{ .Values.environment | quote }}
  - name: PLANGATE_LOG_LEVEL
    value: {{ .Values.logLevel | quote }}
{{- if eq .Values.mode "shared" }}
  - name: PLANGATE_DB
    valueFrom:
      secretKeyRef:
        name: {{ .Values.shared.database.secretName }}
        key: {{ .Values.shared.database.key }}
  - name: PLANGATE_HOST
    value: 0.0.0.0
{{- else }}
  - name: PLANGATE_DB
    value: /var/lib/plangate/plangate.db
  - name: PLANGATE_SOCKET
    value: /var/run/plangate/plangate.sock
{{- end }}
{{- if .Values.token.secretName }}
  - name: PLANGATE_TOKEN_FILE
    value: /etc/plangate-token/{{ .Values.token.key }}
{{- end }}
{{- if .Values.tls.secretName }}
  - name: PLANGATE_TLS_CERT
    value: /etc/plangate-tls/tls.crt
  - name: PLANGATE_TLS_KEY
    value: /etc/plangate-tls/tls.key
{{- if .Values.tls.clientCaKey }}
  - name: PLANGATE_TLS_CLIENT_CA
    value: /etc/plangate-tls/{{ .Values.tls.clientCaKey }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . | indent 2 }}
{{- end }}
ports:
{{- if eq .Values.mode "shared" }}
  - name: grpc
    containerPort: 8013
  - name: ofrep
    containerPort: 8016
{{- end }}
  - name: management
    containerPort: 8014
startupProbe:
  exec:
    command: [plangate, health, --ready]
  periodSeconds: 2
  timeoutSeconds: 5
  failureThreshold: 60
readinessProbe:
  exec:
    command: [plangate, health, --ready]
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  exec:
    command: [plangate, health]
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
resources:
{{ toYaml .Values.resources | indent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
volumeMounts:
  - name: catalog
    mountPath: /etc/plangate
    readOnly: true
{{- if .Values.token.secretName }}
  - name: token
    mountPath: /etc/plangate-token
    readOnly: true
{{- end }}
{{- if .Values.tls.secretName }}
  - name: tls
    mountPath: /etc/plangate-tls
    readOnly: true
{{- end }}
{{- if ne .Values.mode "shared" }}
  - name: socket
    mountPath: /var/run/plangate
  - name: state
    mountPath: /var/lib/plangate
{{- end }}
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "plangate.volumes" -}}
- name: catalog
  configMap:
    name: {{ include "plangate.catalogConfigMap" . }}
{{- if .Values.token.secretName }}
- name: token
  secret:
    secretName: {{ .Values.token.secretName }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}
