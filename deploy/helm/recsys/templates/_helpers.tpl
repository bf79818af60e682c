{{/*
Shared helpers. Components call the generic builders at the bottom ("recsys.http.*", "recsys.worker.*")
with (dict "root" $ "name" "<component>"), so every Deployment gets the same security, env and volumes.
*/}}

{{- define "recsys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "recsys.fullname" -}}
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

{{/* <fullname>-<component>, e.g. recsys-gateway. Args: root, name. */}}
{{- define "recsys.componentName" -}}
{{- printf "%s-%s" (include "recsys.fullname" .root) (.name | kebabcase) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "recsys.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels. Args: root, name. */}}
{{- define "recsys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recsys.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name | kebabcase }}
{{- end }}

{{/* Full labels. Args: root, name. */}}
{{- define "recsys.labels" -}}
helm.sh/chart: {{ include "recsys.chart" .root }}
{{ include "recsys.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: recsys
{{- end }}

{{/* Labels of chart-wide objects (ConfigMap, Secret, PVC...). */}}
{{- define "recsys.commonLabels" -}}
{{ include "recsys.labels" (dict "root" . "name" "common") }}
{{- end }}

{{- define "recsys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recsys.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "recsys.configMapName" -}}
{{- include "recsys.fullname" . }}-config
{{- end }}

{{- define "recsys.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "recsys.fullname" . }}-secrets
{{- end }}
{{- end }}

{{- define "recsys.claimName" -}}
{{- default (printf "%s-state" (include "recsys.fullname" .)) .Values.persistence.pvc.existingClaim }}
{{- end }}

{{/* Image reference. Args: root, image (gateway|ingest|retriever|explainer|als|profiler). */}}
{{- define "recsys.image" -}}
{{- $o := get .root.Values.image.overrides .image | default dict }}
{{- $repo := $o.repository | default (printf "%s/recsys-%s" .root.Values.image.registry .image) }}
{{- $tag := $o.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* Kafka bootstrap servers: bundled or external. */}}
{{- define "recsys.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled }}
{{- printf "%s-kafka:9092" .Release.Name }}
{{- else }}
{{- .Values.externalKafka.bootstrap }}
{{- end }}
{{- end }}

{{/* URL of an HTTP service inside the cluster. Args: root, name. */}}
{{- define "recsys.serviceUrl" -}}
{{- $c := get .root.Values .name }}
{{- printf "http://%s:%v" (include "recsys.componentName" .) $c.port }}
{{- end }}

{{/* Whether a component mounts the shared state volume. Args: root, name. */}}
{{- define "recsys.usesState" -}}
{{- if and .root.Values.persistence.enabled (has .name (list "retriever" "retrieverIndexer" "alsWorker" "alsBeat" "alsTraining" "als" "dashboard")) }}true{{- end }}
{{- end }}

{{/* The migration hook phases: auto = post-install with a bundled DB (it must exist first). */}}
{{- define "recsys.migrationHook" -}}
{{- if .Values.migrations.hook }}
{{- .Values.migrations.hook }}
{{- else if .Values.postgresql.enabled }}
{{- "post-install,pre-upgrade" }}
{{- else }}
{{- "pre-install,pre-upgrade" }}
{{- end }}
{{- end }}

{{/* envFrom + env of every recsys container. Args: root, name. */}}
{{- define "recsys.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "recsys.configMapName" .root }}
  - secretRef:
      name: {{ include "recsys.secretName" .root }}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
  {{- $c := get .root.Values .name }}
  {{- if .spark }}
  {{- $spark := .root.Values.alsTraining.spark }}
  # services/als/config.py sets the master and driver memory on the SparkSession itself.
  - name: RECSYS_SPARK_MASTER
    value: {{ $spark.master | quote }}
  - name: RECSYS_SPARK_DRIVER_MEMORY
    value: {{ $spark.driverMemory | quote }}
  {{- end }}
  {{- if and (hasKey $c "gpu") $c.gpu.enabled }}
  - name: RECSYS_DEVICE
    value: cuda
  {{- end }}
  {{- range $k, $v := $c.env }}
  - name: {{ $k }}
    value: {{ $v | toString | quote }}
  {{- end }}
{{- end }}

{{/* Volume mounts of every recsys container. */}}
{{- define "recsys.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: state
    mountPath: {{ .root.Values.persistence.mountPath }}
  - name: model-cache
    mountPath: /var/cache/recsys
{{- if .spark }}
{{ include "recsys.spark.volumeMount" .root | indent 2 }}
{{- end }}
{{- end }}

{{/* Volumes of every recsys pod: /tmp, RECSYS_HOME (shared state or emptyDir), HF model cache. */}}
{{- define "recsys.volumes" -}}
{{- $p := .root.Values.persistence }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $p.scratchSizeLimit }}
  - name: model-cache
    emptyDir:
      sizeLimit: {{ $p.modelCacheSizeLimit }}
  {{- if include "recsys.usesState" . }}
  {{- if eq $p.type "gcs" }}
  - name: state
    csi:
      driver: gcsfuse.csi.storage.gke.io
      volumeAttributes:
        bucketName: {{ required "persistence.gcs.bucket is required with persistence.type=gcs" $p.gcs.bucket | quote }}
        mountOptions: {{ printf "%s,only-dir=%s,uid=10001,gid=10001" $p.gcs.mountOptions $p.gcs.dir | quote }}
  {{- else }}
  - name: state
    persistentVolumeClaim:
      claimName: {{ include "recsys.claimName" .root }}
  {{- end }}
  {{- else }}
  - name: state
    emptyDir:
      sizeLimit: {{ $p.scratchSizeLimit }}
  {{- end }}
{{- if .spark }}
{{ include "recsys.spark.volume" .root | indent 2 }}
{{- end }}
{{- end }}

{{/* Pod annotations (checksums roll pods when settings change; gcsfuse sidecar injection). */}}
{{- define "recsys.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/common/configmap.yaml") .root | sha256sum }}
{{- if not .root.Values.secrets.existingSecret }}
checksum/secrets: {{ include (print .root.Template.BasePath "/common/secret.yaml") .root | sha256sum }}
{{- end }}
{{- if and (include "recsys.usesState" .) (eq .root.Values.persistence.type "gcs") }}
gke-gcsfuse/volumes: "true"
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Cloud SQL Auth Proxy as a native sidecar (an init container that keeps running). */}}
{{- define "recsys.cloudSqlProxy" -}}
{{- $p := .root.Values.cloudSqlProxy }}
{{- if $p.enabled }}
initContainers:
  - name: cloud-sql-proxy
    image: {{ $p.image }}
    restartPolicy: Always
    args:
      - --structured-logs
      - --port={{ $p.port }}
      - --health-check
      - --http-address=0.0.0.0
      - --http-port=9090
      {{- if $p.privateIp }}
      - --private-ip
      {{- end }}
      {{- if $p.autoIamAuthn }}
      - --auto-iam-authn
      {{- end }}
      - {{ required "cloudSqlProxy.instanceConnectionName is required" $p.instanceConnectionName | quote }}
    ports:
      - name: proxy-health
        containerPort: 9090
    startupProbe:
      httpGet: {path: /startup, port: proxy-health}
      periodSeconds: 2
      failureThreshold: 30
    livenessProbe:
      httpGet: {path: /liveness, port: proxy-health}
      periodSeconds: 30
    readinessProbe:
      httpGet: {path: /readiness, port: proxy-health}
      periodSeconds: 10
    resources:
      {{- toYaml $p.resources | nindent 6 }}
    securityContext:
      {{- toYaml .root.Values.containerSecurityContext | nindent 6 }}
{{- end }}
{{- end }}

{{/*
Scheduling: component values win over the globals; GPU components get the GPU pool's selector and
tolerations; pods sharing a ReadWriteOnce state volume are kept on one node.
Args: root, name.
*/}}
{{- define "recsys.scheduling" -}}
{{- $c := get .root.Values .name }}
{{- $gpu := and (hasKey $c "gpu") $c.gpu.enabled }}
{{- $ns := merge (dict) ($c.nodeSelector | default dict) (ternary .root.Values.gpu.nodeSelector dict $gpu) (.root.Values.nodeSelector | default dict) }}
{{- with $ns }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tol := concat ($c.tolerations | default list) (ternary .root.Values.gpu.tolerations list $gpu) }}
{{- if not $tol }}{{ $tol = .root.Values.tolerations | default list }}{{ end }}
{{- with $tol }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $c.affinity }}
affinity:
  {{- toYaml $c.affinity | nindent 2 }}
{{- else if and (include "recsys.usesState" .) (eq .root.Values.persistence.type "pvc") (eq .root.Values.persistence.pvc.accessMode "ReadWriteOnce") }}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/instance: {{ .root.Release.Name }}
            recsys.io/state-volume: shared
{{- end }}
{{- end }}

{{/* Pod-level fields shared by every recsys pod. Args: root, name. */}}
{{- define "recsys.podCommon" -}}
{{- if and .spark (include "recsys.spark.onKubernetes" .root) }}
serviceAccountName: {{ include "recsys.spark.serviceAccountName" .root }}
automountServiceAccountToken: true
{{- else }}
serviceAccountName: {{ include "recsys.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountServiceAccountToken }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with (include "recsys.scheduling" . | trim) }}
{{ . }}
{{- end }}
{{ include "recsys.volumes" . | trim }}
{{- end }}

{{/* Pod template metadata. Args: root, name. */}}
{{- define "recsys.podMetadata" -}}
metadata:
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
    {{- if include "recsys.usesState" . }}
    recsys.io/state-volume: shared
    {{- end }}
    {{- with .root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "recsys.podAnnotations" . | nindent 4 }}
{{- end }}

{{/* Container resources, adding the GPU limit when the component asks for one. Args: root, name. */}}
{{- define "recsys.resources" -}}
{{- $c := get .root.Values .name }}
{{- $res := deepCopy $c.resources }}
{{- if and (hasKey $c "gpu") $c.gpu.enabled }}
{{- $limits := $res.limits | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" $c.gpu.count }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
resources:
  {{- toYaml $res | nindent 2 }}
{{- end }}

{{/* ================= HTTP services ================= */}}

{{- define "recsys.http.deployment" -}}
{{- $c := get .root.Values .name }}
{{- $image := default .name .image }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    {{- include "recsys.podMetadata" . | trim | nindent 4 }}
    spec:
      {{- include "recsys.podCommon" . | trim | nindent 6 }}
      {{- with (include "recsys.cloudSqlProxy" . | trim) }}{{ . | nindent 6 }}{{ end }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .name | kebabcase }}
          image: {{ include "recsys.image" (dict "root" .root "image" $image) }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          args: ["serve", {{ .name | quote }}, "--host", "0.0.0.0", "--port", "{{ $c.port }}", "--workers", "{{ $c.workers }}"]
          ports:
            - name: http
              containerPort: {{ $c.port }}
              protocol: TCP
          {{- include "recsys.env" . | nindent 10 }}
          # uvicorn answers only once the lifespan loaded models/indexes: allow for that before liveness.
          startupProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 5
            failureThreshold: {{ div ($c.startupSeconds | default 120) 5 }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 15
            timeoutSeconds: 5
            failureThreshold: 4
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          {{- include "recsys.resources" . | nindent 10 }}
          securityContext:
            {{- toYaml .root.Values.containerSecurityContext | nindent 12 }}
          {{- include "recsys.volumeMounts" . | nindent 10 }}
{{- end }}

{{- define "recsys.http.service" -}}
{{- $c := get .root.Values .name }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  type: {{ $c.serviceType }}
  selector:
    {{- include "recsys.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $c.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{- define "recsys.http.hpa" -}}
{{- $c := get .root.Values .name }}
{{- if $c.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "recsys.componentName" . }}
  minReplicas: {{ $c.autoscaling.minReplicas }}
  maxReplicas: {{ $c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $c.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{- define "recsys.http.pdb" -}}
{{- $c := get .root.Values .name }}
{{- if $c.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $c.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/*
Ingress NetworkPolicy of an HTTP service. Args: root, name, from (list of component names allowed to
call it), extraFrom (list of raw peers), open (true: anyone may call it: the gateway only).
With dashboard.enabled the dashboard is added to every `from` list.
*/}}
{{- define "recsys.http.networkPolicy" -}}
{{- $c := get .root.Values .name }}
{{- if .root.Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    {{- if .open }}
    - ports:
        - port: http
          protocol: TCP
      {{- with .extraFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- else }}
    - ports:
        - port: http
          protocol: TCP
      from:
        {{- $root := .root }}
        {{- $from := .from }}
        {{- /* The dashboard (when deployed) reads every service like a client: health, readiness, data. */}}
        {{- if .root.Values.dashboard.enabled }}{{ $from = append $from "dashboard" }}{{ end }}
        {{- range $from }}
        - podSelector:
            matchLabels:
              {{- include "recsys.selectorLabels" (dict "root" $root "name" .) | nindent 14 }}
        {{- end }}
        {{- with .extraFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- end }}
    {{- with .root.Values.networkPolicy.metricsFrom }}
    - ports:
        - port: http
          protocol: TCP
      from:
        {{- toYaml . | nindent 8 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* ================= Consumers and workers (no HTTP port) ================= */}}

{{/* Args: root, name, image, args (list), singleton (bool: Recreate, 1 replica). */}}
{{- define "recsys.worker.deployment" -}}
{{- $c := get .root.Values .name }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  {{- if .singleton }}
  replicas: 1
  strategy:
    type: Recreate
  {{- else if not .autoscaled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  template:
    {{- include "recsys.podMetadata" . | trim | nindent 4 }}
    spec:
      {{- include "recsys.podCommon" . | trim | nindent 6 }}
      {{- with (include "recsys.cloudSqlProxy" . | trim) }}{{ . | nindent 6 }}{{ end }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds | default 60 }}
      containers:
        - name: {{ .name | kebabcase }}
          image: {{ include "recsys.image" (dict "root" .root "image" .image) }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          # Celery beat writes its schedule file to the working directory: keep it on a writable volume.
          workingDir: /tmp
          args:
            {{- toYaml .args | nindent 12 }}
          {{- if and .spark (include "recsys.spark.onKubernetes" .root) }}
          ports:
            - {name: spark-driver, containerPort: 7078}
            - {name: spark-blocks, containerPort: 7079}
          {{- end }}
          {{- include "recsys.env" . | nindent 10 }}
          {{- include "recsys.resources" . | nindent 10 }}
          securityContext:
            {{- toYaml .root.Values.containerSecurityContext | nindent 12 }}
          {{- include "recsys.volumeMounts" . | nindent 10 }}
{{- end }}

{{/* Ingress-deny NetworkPolicy for pods that serve nothing (consumers, workers). Args: root, name. */}}
{{- define "recsys.worker.networkPolicy" -}}
{{- if .root.Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "recsys.componentName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  {{- if and .spark (include "recsys.spark.onKubernetes" .root) }}
  ingress:
    # Spark executors connect back to the driver running in this pod.
    - from:
        - podSelector:
            matchLabels:
              recsys-spark-driver: {{ .root.Release.Name }}
      ports:
        - {port: 7078, protocol: TCP}
        - {port: 7079, protocol: TCP}
  {{- else }}
  ingress: []
  {{- end }}
{{- end }}
{{- end }}

{{/* ================= Spark (ALS worker, beat and training job) ================= */}}

{{- define "recsys.spark.onKubernetes" -}}
{{- if hasPrefix "k8s://" .Values.alsTraining.spark.master }}true{{ end }}
{{- end }}

{{- define "recsys.spark.serviceAccountName" -}}
{{- if include "recsys.spark.onKubernetes" . }}
{{- printf "%s-spark" (include "recsys.fullname" .) }}
{{- else }}
{{- include "recsys.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
A Spark driver pod: the spark-defaults.conf mount, the driver ports, and with a k8s:// master the
account that may create executor pods. Applied to a rendered Deployment/CronJob pod spec by the caller.
*/}}
{{- define "recsys.spark.volume" -}}
- name: spark-conf
  configMap:
    name: {{ include "recsys.fullname" . }}-spark
{{- end }}

{{- define "recsys.spark.volumeMount" -}}
- name: spark-conf
  mountPath: /etc/recsys/spark
  readOnly: true
{{- end }}
