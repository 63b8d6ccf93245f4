{{/*
Where the agent pod gets `gpu-agent` (values agent.source):
  zipapp - the chart's files/gpu-agent.pyz (built from the chart's own sources by
           `make zipapp`), carried in a ConfigMap and mounted at /usr/local/bin/gpu-agent
           in a stock Python image (agent.zipapp.image). No registry push needed.
  image  - the agent image built from the Containerfile (image.*).
*/}}
{{- define "k8s-gpu-mcp.zipapp" -}}
{{- if eq .Values.agent.source "zipapp" -}}true{{- end -}}
{{- end -}}

{{- define "k8s-gpu-mcp.zipappConfigMapName" -}}
{{- printf "%s-agent" (include "k8s-gpu-mcp.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The zipapp's bytes (a string holding them); fails when the chart lacks the file. */}}
{{- define "k8s-gpu-mcp.zipappBytes" -}}
{{- $pyz := .Files.Get "files/gpu-agent.pyz" -}}
{{- if not $pyz -}}
{{- fail "agent.source=zipapp, but the chart has no files/gpu-agent.pyz: run `make zipapp` in the repository (or check out the committed file), or set agent.source=image to run the agent image." -}}
{{- end -}}
{{- $pyz -}}
{{- end -}}

{{/* The container image: the stock Python image for the zipapp, else the agent image. */}}
{{- define "k8s-gpu-mcp.agentImage" -}}
{{- if include "k8s-gpu-mcp.zipapp" . -}}
{{- with .Values.agent.zipapp.image -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- include "k8s-gpu-mcp.image" . -}}
{{- end -}}
{{- end -}}
