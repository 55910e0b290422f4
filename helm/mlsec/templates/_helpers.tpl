{{- define "mlsec.name" -}}{{ .Release.Name }}-server{{- end -}}
{{- define "mlsec.labels" -}}
app.kubernetes.io/name: mlsec-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
mlsec.dev/model: {{ .Values.model.name }}
{{- end -}}
{{- define "mlsec.selector" -}}
{{- if .Values.kserve.enabled -}}
serving.kserve.io/inferenceservice: {{ include "mlsec.name" . }}
{{- else -}}
app.kubernetes.io/name: mlsec-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
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

{{- define "mlsec.serverContainer" -}}
image: "{{ .Values.image.repository }}@{{ .Values.image.digest }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["serve", "--name", {{ .Values.model.name | quote }}, "--ref", {{ .Values.model.ref | quote }},
       "--host", "0.0.0.0", "--port", {{ .Values.port | quote }}, "--public-key", "/etc/mlsec/signing/signing.pub",
       "--api-keys", "/etc/mlsec/api-keys/keys.json", "--audit-log", "-", "--rate", {{ .Values.rateLimit | quote }}
       {{- with .Values.model.digest }}, "--digest", {{ . | quote }}{{ end }}]
env:
  - {name: MLSEC_S3_ENDPOINT, value: {{ .Values.s3.endpoint | quote }}}
  - {name: MLSEC_S3_BUCKET, value: {{ .Values.s3.bucket | quote }}}
  - {name: MLSEC_HOME, value: /var/lib/mlsec}
  - {name: MLSEC_S3_CREDENTIALS_DIR, value: /etc/mlsec/s3}
ports:
  - {name: http, containerPort: {{ .Values.port }}, protocol: TCP}
readinessProbe:
  httpGet: {path: /v1/models/{{ .Values.model.name }}, port: http}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /, port: http}
  periodSeconds: 10
resources: {{- toYaml .Values.resources | nindent 2 }}
securityContext: {{- include "mlsec.containerSecurity" . | nindent 2 }}
volumeMounts:
  - {name: signing-key, mountPath: /etc/mlsec/signing, readOnly: true}
  - {name: s3-credentials, mountPath: /etc/mlsec/s3, readOnly: true}
  - {name: api-keys, mountPath: /etc/mlsec/api-keys, readOnly: true}
  - {name: state, mountPath: /var/lib/mlsec}
  - {name: tmp, mountPath: /tmp}
{{- end -}}
{{- define "mlsec.serverVolumes" -}}
- name: signing-key
  secret: {secretName: {{ .Values.signing.publicKeySecret }}, defaultMode: 0444}
- name: s3-credentials
  secret: {secretName: {{ .Values.s3.credentialsSecret }}, defaultMode: 0400}
- name: api-keys
  secret: {secretName: {{ .Values.apiKeysSecret }}, defaultMode: 0400}
- name: state
  emptyDir: {sizeLimit: 1Gi}
- name: tmp
  emptyDir: {sizeLimit: 256Mi}
{{- end -}}
