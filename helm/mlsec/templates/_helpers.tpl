{{- define "mlsec.name" -}}{{ .Release.Name }}-server{{- end -}}
{{- define "mlsec.labels" -}}
app.kubernetes.io/name: mlsec-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
mlsec.dev/model: {{ .Values.model.name }}
{{- end -}}
{{- define "mlsec.selector" -}}
app.kubernetes.io/name: mlsec-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "mlsec.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "mlsec.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: ["ALL"]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
