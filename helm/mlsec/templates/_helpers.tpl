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
