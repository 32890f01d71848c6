{{/* Chart name, truncated to a label value's 63 characters. */}}
{{- define "triton-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already contains the chart name. */}}
{{- define "triton-operator.fullname" -}}
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

{{/* Labels that select the operator pod; never change them across upgrades (selectors are immutable). */}}
{{- define "triton-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "triton-operator.labels" -}}
{{ include "triton-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: triton-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator image; staging Jobs run the same image, so the Deployment passes it on in an env var. */}}
{{- define "triton-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Lease the replicas elect the acting one with (leaderElection). */}}
{{- define "triton-operator.leaseName" -}}
{{- default (include "triton-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "triton-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "triton-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Rules for the namespaced kinds the operator reconciles and the children it owns; in a ClusterRole
(cluster-wide) or in a Role per watched namespace. Nothing touches Secrets: the operator never reads them.
*/}}
{{- define "triton-operator.workloadRules" -}}
- apiGroups: ["tritonoperator.dev"]
  resources: ["tritonservers"]
  verbs: ["get", "list", "watch", "patch", "update"]
# create/delete: a model served through a Gateway is placed on each server as a TritonModel of its own.
- apiGroups: ["tritonoperator.dev"]
  resources: ["tritonmodels"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["tritonoperator.dev"]
  resources: ["tritonservers/status", "tritonmodels/status"]
  verbs: ["patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The routes of servers and models exposed through a Gateway (spec.gateway); only ones it owns.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Reads only: a parentRef to a Gateway that does not exist is reported as such (gateways say nothing).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
# Each TritonServer's PodMonitor (metrics.podMonitor or spec.monitoring.podMonitor).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "update", "patch", "delete"]
# Each TritonServer's KEDA ScaledObject (spec.autoscaling), and the HPA KEDA makes of it, read by name
# into status.autoscaling.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "update", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The Triton pods' readiness gate (tritonoperator.dev/models-loaded): set once their models are loaded.
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Cluster-scoped reads kopf makes at startup: it discovers CRDs and scans namespaces. */}}
{{- define "triton-operator.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* A Prometheus duration as the alerts' annotations say it: 10m "10 minutes", 1m "1 minute", 30s
"30 seconds", 2h "2 hours"; anything else (1h30m) as written. */}}
{{- define "triton-operator.durationWords" -}}
{{- $units := dict "s" "second" "m" "minute" "h" "hour" }}
{{- $parts := regexFindAll "^[0-9]+|[smh]$" . -1 }}
{{- if and (regexMatch "^[0-9]+[smh]$" .) (eq (len $parts) 2) }}
{{- $n := index $parts 0 }}
{{- printf "%s %s%s" $n (get $units (index $parts 1)) (ternary "" "s" (eq $n "1")) }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/* The rule groups of files/prometheus-rules.yaml with metrics.prometheusRule.alertFor applied: each
named alert holds for the given duration instead of its own, and its summary and description, which
say "for <its own hold>", say the new one. */}}
{{- define "triton-operator.prometheusRuleGroups" -}}
{{- $rules := .Files.Get "files/prometheus-rules.yaml" | fromYaml }}
{{- $alertFor := .Values.metrics.prometheusRule.alertFor | default dict }}
{{- range $group := $rules.groups }}
{{- range $rule := $group.rules }}
{{- if and (hasKey $rule "alert") (hasKey $alertFor $rule.alert) }}
{{- $hold := get $alertFor $rule.alert }}
{{- $was := printf "for %s" (include "triton-operator.durationWords" $rule.for) }}
{{- $now := printf "for %s" (include "triton-operator.durationWords" $hold) }}
{{- $_ := set $rule "for" $hold }}
{{- range $key := list "summary" "description" }}
{{- $_ := set $rule.annotations $key (replace $was $now (get $rule.annotations $key)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (dict "groups" $rules.groups) }}
{{- end }}
