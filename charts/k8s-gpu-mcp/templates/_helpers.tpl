{{/*
Chart name. Fixed on purpose (no nameOverride): the broker discovers agent pods by
app.kubernetes.io/name=k8s-gpu-mcp, app.kubernetes.io/component=agent.
*/}}
{{- define "k8s-gpu-mcp.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified name for the release's objects (63 characters max, DNS label rules).
*/}}
{{- define "k8s-gpu-mcp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "k8s-gpu-mcp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "k8s-gpu-mcp.labels" -}}
helm.sh/chart: {{ include "k8s-gpu-mcp.chart" . }}
app.kubernetes.io/name: {{ include "k8s-gpu-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: k8s-gpu-mcp
{{- end -}}

{{/* Selector labels of the agent pods (immutable in a DaemonSet: never change them). */}}
{{- define "k8s-gpu-mcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "k8s-gpu-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* Labels on the agent's objects: common labels plus the component. */}}
{{- define "k8s-gpu-mcp.agentLabels" -}}
{{ include "k8s-gpu-mcp.labels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/*
Labels on the agent pod template: the selector labels and part-of, nothing that changes
with the chart (helm.sh/chart, app.kubernetes.io/version): a new label on the template
is a new pod template, so a chart upgrade would restart every agent pod for nothing.
The image itself says which agent runs.
*/}}
{{- define "k8s-gpu-mcp.agentPodLabels" -}}
{{ include "k8s-gpu-mcp.selectorLabels" . }}
app.kubernetes.io/part-of: k8s-gpu-mcp
{{- end -}}

{{- define "k8s-gpu-mcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "k8s-gpu-mcp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "k8s-gpu-mcp.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the agent reads XIDs from the host kernel log (GPU_AGENT_KMSG=auto: /dev/kmsg,
else syslog(2) with CAP_SYSLOG). Off for non-root: added capabilities are useless to a
non-root process (Kubernetes sets no ambient capabilities).
*/}}
{{- define "k8s-gpu-mcp.xidEnabled" -}}
{{- if and .Values.xid.enabled (not .Values.agent.nonRoot.enabled) -}}true{{- end -}}
{{- end -}}

{{/*
"true" when a non-root agent reads XIDs from the host journal alone: it cannot use
CAP_SYSLOG, so the ring buffer stays closed to it and the agent falls back to the journal
(hostJournal, readable through hostJournal.supplementalGroups).
*/}}
{{- define "k8s-gpu-mcp.journalOnlyXids" -}}
{{- if and .Values.xid.enabled .Values.agent.nonRoot.enabled .Values.hostJournal.enabled -}}true{{- end -}}
{{- end -}}

{{/* GPU_AGENT_KMSG: "auto" (/dev/kmsg, else syslog(2), else the journal) or "off". */}}
{{- define "k8s-gpu-mcp.kmsgSetting" -}}
{{- ternary "auto" "off" (or (eq (include "k8s-gpu-mcp.xidEnabled" .) "true") (eq (include "k8s-gpu-mcp.journalOnlyXids" .) "true")) -}}
{{- end -}}

{{/* "true" when the host's /dev/kmsg is mounted (opt-in: xid.mountDevKmsg). */}}
{{- define "k8s-gpu-mcp.mountKmsg" -}}
{{- if and (include "k8s-gpu-mcp.xidEnabled" .) .Values.xid.mountDevKmsg -}}true{{- end -}}
{{- end -}}

{{/* "true" when the container adds CAP_SYSLOG (privileged mode has every capability). */}}
{{- define "k8s-gpu-mcp.addsSyslog" -}}
{{- if and (include "k8s-gpu-mcp.xidEnabled" .) (ne .Values.gpu.mode "privileged") -}}true{{- end -}}
{{- end -}}

{{/* "true" when the pod mounts anything from the host. */}}
{{- define "k8s-gpu-mcp.usesHostPath" -}}
{{- if or (include "k8s-gpu-mcp.mountKmsg" .) .Values.hostProc.enabled .Values.podResources.enabled .Values.hostJournal.enabled .Values.hostSys.enabled (eq .Values.gpu.mode "privileged") -}}true{{- end -}}
{{- end -}}

{{/*
The strictest Pod Security Standard the agent pod meets, for the namespace's
pod-security.kubernetes.io/enforce label:
  privileged - privileged mode, any hostPath mount, or CAP_SYSLOG: baseline allows adding
               only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD,
               NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT
  baseline   - runs as root, but no host mounts and no added capability
  restricted - non-root, no host mounts, all capabilities dropped, RuntimeDefault seccomp
*/}}
{{- define "k8s-gpu-mcp.podSecurityLevel" -}}
{{- if or (include "k8s-gpu-mcp.usesHostPath" .) (include "k8s-gpu-mcp.xidEnabled" .) -}}privileged
{{- else if not .Values.agent.nonRoot.enabled -}}baseline
{{- else -}}restricted
{{- end -}}
{{- end -}}

{{/* Why the pod needs the "privileged" Pod Security level, for NOTES.txt. */}}
{{- define "k8s-gpu-mcp.privilegedReasons" -}}
{{- $why := list -}}
{{- if eq .Values.gpu.mode "privileged" -}}{{- $why = append $why "privileged container" -}}{{- end -}}
{{- if include "k8s-gpu-mcp.addsSyslog" . -}}{{- $why = append $why "adds CAP_SYSLOG for XIDs (not in baseline's capability list)" -}}{{- end -}}
{{- if include "k8s-gpu-mcp.usesHostPath" . -}}{{- $why = append $why "mounts host paths" -}}{{- end -}}
{{- join "; " $why -}}
{{- end -}}

{{/* resource.k8s.io version for DRA mode: the value, or the newest the cluster serves. */}}
{{- define "k8s-gpu-mcp.draApiVersion" -}}
{{- if .Values.gpu.dra.apiVersion -}}
{{- .Values.gpu.dra.apiVersion -}}
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1" -}}resource.k8s.io/v1
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1beta2" -}}resource.k8s.io/v1beta2
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1beta1" -}}resource.k8s.io/v1beta1
{{- else -}}
{{- fail "gpu.mode=dra needs the resource.k8s.io API (Kubernetes 1.32+ with DRA enabled), but the cluster serves none of resource.k8s.io/v1, v1beta2, v1beta1. Enable DRA, set gpu.dra.apiVersion to force a version, or choose gpu.mode=runtimeClass." -}}
{{- end -}}
{{- end -}}

{{- define "k8s-gpu-mcp.claimTemplateName" -}}
{{- printf "%s-gpus" (include "k8s-gpu-mcp.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Refuse to render a dangerous or contradictory configuration, with a message that says
what to set instead. Included once, from the DaemonSet.
*/}}
{{- define "k8s-gpu-mcp.validate" -}}
{{- $mode := .Values.gpu.mode -}}
{{- if and (eq $mode "privileged") (not .Values.gpu.privileged.acknowledgeHostRootAccess) -}}
{{- fail "gpu.mode=privileged makes every agent pod a privileged container: root on its GPU node, and anyone allowed to exec into it can take the node over. Prefer gpu.mode=runtimeClass (install the NVIDIA container toolkit or GPU Operator). If this cluster has no other way to reach its GPUs, set gpu.privileged.acknowledgeHostRootAccess=true to confirm." -}}
{{- end -}}
{{- if and (eq $mode "dra") (not .Values.gpu.dra.adminAccess) (eq .Values.gpu.dra.allocationMode "All") -}}
{{- fail "gpu.mode=dra with gpu.dra.adminAccess=false and allocationMode=All would allocate every GPU on every node to the agent and starve all GPU workloads. Keep gpu.dra.adminAccess=true (recommended), or set gpu.dra.allocationMode=ExactCount." -}}
{{- end -}}
{{- if and .Values.rbac.clusterWidePodReads .Values.rbac.podReadNamespaces -}}
{{- fail "rbac.podReadNamespaces is set, but rbac.clusterWidePodReads=true already lets the bound subjects read pods in every namespace. To restrict pod reads to those namespaces, set rbac.clusterWidePodReads=false; otherwise remove rbac.podReadNamespaces." -}}
{{- end -}}
{{- if and .Values.hostJournal.enabled (not .Values.xid.enabled) -}}
{{- fail "hostJournal.enabled=true but xid.enabled=false: with XID analysis off (GPU_AGENT_KMSG=off) the agent reads no kernel log, the journal included, so the mount would only expose the host's logs. Set xid.enabled=true, or hostJournal.enabled=false." -}}
{{- end -}}
{{- if and (eq $mode "dra") (semverCompare "<1.32.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "gpu.mode=dra needs Kubernetes 1.32 or newer (resource.k8s.io DRA); this cluster is %s. Use gpu.mode=runtimeClass." .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}

{{/*
The per-namespace pod-read Role (rbac.clusterWidePodReads=false). It lives in another
namespace, so the release namespace is in its name: two releases must not collide.
*/}}
{{- define "k8s-gpu-mcp.podReadRoleName" -}}
{{- printf "%s-%s-pod-read" (include "k8s-gpu-mcp.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped names must not collide between releases in different namespaces. */}}
{{- define "k8s-gpu-mcp.clusterRoleName" -}}
{{- printf "%s-%s-cluster-read" (include "k8s-gpu-mcp.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
RBAC subjects from rbac.subjects: Users and Groups get the RBAC apiGroup;
ServiceAccounts default to the release namespace. Plus the broker's own ServiceAccount
when it runs with a static token (broker.auth.mode=token).
*/}}
{{- define "k8s-gpu-mcp.subjects" -}}
{{- range .Values.rbac.subjects }}
- kind: {{ .kind }}
  name: {{ .name | quote }}
  {{- if eq .kind "ServiceAccount" }}
  namespace: {{ default $.Release.Namespace .namespace }}
  {{- else }}
  apiGroup: rbac.authorization.k8s.io
  {{- end }}
{{- end }}
{{- if include "k8s-gpu-mcp.brokerActsAsItself" . }}
{{- /* broker.auth.mode=token: the broker calls the API as itself, so it needs the roles. */}}
- kind: ServiceAccount
  name: {{ include "k8s-gpu-mcp.brokerName" . | quote }}
  namespace: {{ .Release.Namespace }}
{{- end }}
{{- end -}}

{{/* --- the optional in-cluster broker (broker.enabled) ------------------------------ */}}

{{- define "k8s-gpu-mcp.brokerName" -}}
{{- printf "%s-broker" (include "k8s-gpu-mcp.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the broker pods (immutable in a Deployment: never change them). */}}
{{- define "k8s-gpu-mcp.brokerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "k8s-gpu-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{/* Labels on the broker's objects. */}}
{{- define "k8s-gpu-mcp.brokerLabels" -}}
{{ include "k8s-gpu-mcp.labels" . }}
app.kubernetes.io/component: broker
{{- end -}}

{{/* Broker pod template labels: nothing that changes with the chart (see agentPodLabels). */}}
{{- define "k8s-gpu-mcp.brokerPodLabels" -}}
{{ include "k8s-gpu-mcp.brokerSelectorLabels" . }}
app.kubernetes.io/part-of: k8s-gpu-mcp
{{- end -}}

{{- define "k8s-gpu-mcp.brokerImage" -}}
{{- $image := .Values.broker.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the broker acts as its own ServiceAccount (static token, no impersonation). */}}
{{- define "k8s-gpu-mcp.brokerActsAsItself" -}}
{{- if and .Values.broker.enabled (eq .Values.broker.auth.mode "token") -}}true{{- end -}}
{{- end -}}

{{/* "true" when the diagnosis roles have anyone to bind. */}}
{{- define "k8s-gpu-mcp.hasSubjects" -}}
{{- if or .Values.rbac.subjects (include "k8s-gpu-mcp.brokerActsAsItself" .) -}}true{{- end -}}
{{- end -}}

{{/* Refuse broker settings that cannot work, saying what to set. */}}
{{- define "k8s-gpu-mcp.validateBroker" -}}
{{- $b := .Values.broker -}}
{{- if and (eq $b.auth.mode "token") (not $b.auth.tokenSecret.name) -}}
{{- fail (printf "broker.auth.mode=token needs broker.auth.tokenSecret.name: a Secret in namespace %s holding the bearer token clients send. Create one, e.g. kubectl -n %s create secret generic gpu-mcp-broker-token --from-literal=token=\"$(openssl rand -hex 32)\", then set broker.auth.tokenSecret.name=gpu-mcp-broker-token. Or use broker.auth.mode=kubernetes (callers send their own Kubernetes token)." .Release.Namespace .Release.Namespace) -}}
{{- end -}}
{{- if and $b.metrics.serviceMonitor.enabled (not $b.metrics.enabled) -}}
{{- fail "broker.metrics.serviceMonitor.enabled=true needs broker.metrics.enabled=true: there is no metrics port to scrape." -}}
{{- end -}}
{{- if and $b.metrics.enabled (eq (int $b.metrics.port) (int $b.service.port)) -}}
{{- fail "broker.metrics.port and broker.service.port must differ: metrics are served on their own port." -}}
{{- end -}}
{{- end -}}
