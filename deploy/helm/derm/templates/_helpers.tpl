{{/* Labels of one component: include "derm.labels" (dict "root" $ "name" "derm-adapter") */}}
{{- define "derm.labels" -}}
{{ include "derm.selector" . }}
app.kubernetes.io/part-of: derm
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}

{{- define "derm.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "derm.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/* Pod and container security: what Pod Security "restricted" asks, plus a read-only root. */}}
{{- define "derm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "derm.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The adapter's serving certificate Secret. */}}
{{- define "derm.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{ required "tls.secretName is required with tls.mode=secret" .Values.tls.secretName }}
{{- else -}}
derm-adapter-tls
{{- end -}}
{{- end }}
