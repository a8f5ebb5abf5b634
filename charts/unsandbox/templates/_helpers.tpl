{{/*
Names and labels shared by every template. Names depend only on the release and the
values, never on time or randomness, so `helm template` output is stable for GitOps.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "unsandbox.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-wide base name: `<release>-unsandbox`, or just the release name when it
already contains "unsandbox" (so `helm install unsandbox` gives `unsandbox`, not
`unsandbox-unsandbox`), or fullnameOverride. Truncated to leave room for the longest
suffix used below ("-controller-metrics", 19 characters) within 63.
*/}}
{{- define "unsandbox.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "unsandbox.controller.fullname" -}}
{{- printf "%s-controller" (include "unsandbox.fullname" .) }}
{{- end }}

{{- define "unsandbox.agent.fullname" -}}
{{- printf "%s-agent" (include "unsandbox.fullname" .) }}
{{- end }}

{{/* The Lease the controller replicas compete for. */}}
{{- define "unsandbox.leaseName" -}}
{{- default (include "unsandbox.controller.fullname" .) .Values.controller.leaseName }}
{{- end }}

{{/* agent.nodeSelector as "key=value,key=value", sorted by key, for the controller. */}}
{{- define "unsandbox.agentSelector" -}}
{{- $pairs := list }}
{{- range $k, $v := .Values.agent.nodeSelector }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The container image, tag defaulting to the chart's appVersion. */}}
{{- define "unsandbox.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Labels on every object. Pass a dict: (dict "ctx" $ "component" "agent").
*/}}
{{- define "unsandbox.labels" -}}
{{ include "unsandbox.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: unsandbox
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Labels that select a component's pods. These never change between versions, because a
Deployment's and a DaemonSet's selector is immutable.
*/}}
{{- define "unsandbox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "unsandbox.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/*
Security context shared by both containers: nothing beyond an ordinary process.
*/}}
{{- define "unsandbox.containerSecurityContext" -}}
# No setuid binary or file capability can raise this process's privileges.
allowPrivilegeEscalation: false
# No Linux capability is needed: HTTP to the API server and to LXD's unix socket
# are plain file and network operations.
capabilities:
  drop: ["ALL"]
# The image is immutable at run time; scratch space is the /tmp emptyDir.
readOnlyRootFilesystem: true
privileged: false
{{- end }}
