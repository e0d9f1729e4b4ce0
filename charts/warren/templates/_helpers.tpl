{{/*
Expand the name of the chart.
*/}}
{{- define "warren.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "warren.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "warren.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "warren.labels" -}}
helm.sh/chart: {{ include "warren.chart" . }}
{{ include "warren.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: warren
{{- end }}

{{/*
Selector labels: only name and instance. Selectors are immutable, so nothing that changes between
releases (version, chart) may ever appear in one.
*/}}
{{- define "warren.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warren.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
A component's labels and selector labels. Called with (dict "root" $ "component" "api"), and for a
worker pool also "pool" (the pool's key in .Values.pools).
*/}}
{{- define "warren.componentSelectorLabels" -}}
{{ include "warren.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
warren/pool: {{ . }}
{{- end }}
{{- end }}

{{- define "warren.componentLabels" -}}
{{ include "warren.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
warren/pool: {{ . }}
{{- end }}
{{- end }}

{{/*
The namespace every object goes to.
*/}}
{{- define "warren.namespace" -}}
{{- .Release.Namespace -}}
{{- end }}

{{/*
Names of the objects: the full name and a suffix, the full name cut short so that the whole stays
within a DNS label's 63 characters (52 for the StatefulSet, whose pods add "-N" and whose
controller-revision-hash label adds a hash). Called with (dict "root" $ "suffix" "api"), and "max".
*/}}
{{- define "warren.suffixed" -}}
{{- $max := int (default 63 .max) -}}
{{- $base := include "warren.fullname" .root | trunc (int (sub (sub $max 1) (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base .suffix -}}
{{- end }}

{{- define "warren.rabbitmq.fullname" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "rabbitmq" "max" 52) }}
{{- end }}

{{- define "warren.rabbitmq.headless" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "rabbitmq-headless") }}
{{- end }}

{{- define "warren.rabbitmq.secretName" -}}
{{- if .Values.rabbitmq.auth.existingSecret }}
{{- .Values.rabbitmq.auth.existingSecret }}
{{- else }}
{{- include "warren.rabbitmq.fullname" . }}
{{- end }}
{{- end }}

{{- define "warren.api.fullname" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "api") }}
{{- end }}

{{- define "warren.api.keysSecret" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "api-keys") }}
{{- end }}

{{/* Called with (dict "root" $ "pool" NAME). */}}
{{- define "warren.worker.fullname" -}}
{{- include "warren.suffixed" (dict "root" .root "suffix" (printf "worker-%s" .pool)) }}
{{- end }}

{{- define "warren.serviceAccountName" -}}
{{- include "warren.fullname" . }}
{{- end }}

{{/*
Images. Called with (dict "root" $ "image" .Values.image.worker): registry/repository:tag, or
@digest when one is given; the tag defaults to the chart's appVersion.
*/}}
{{- define "warren.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $ref := .image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if .image.digest }}
{{- printf "%s@%s" $ref .image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "warren.rabbitmq.image" -}}
{{- $image := .Values.rabbitmq.image -}}
{{- $ref := $image.repository -}}
{{- if $image.registry }}{{ $ref = printf "%s/%s" $image.registry $ref }}{{ end -}}
{{- if $image.digest }}
{{- printf "%s@%s" $ref $image.digest }}
{{- else }}
{{- printf "%s:%s" $ref $image.tag }}
{{- end }}
{{- end }}

{{- define "warren.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The bundled RabbitMQ's users: its administrator (rabbitmq.auth), for people and tools, and one user
per role with only the permissions the role needs, on the vhost "/" (RabbitMQ's three regular
expressions over exchange and queue names: configure, write, read). No Warren pod connects as the
administrator. Publishing through the default exchange (retries, replies) is a write on
"amq.default"; direct reply-to is a read on "amq.rabbitmq.reply-to"; passive declares (the API's and
the workers' existence checks) need no permission. YAML (fromYaml): user name -> tags, configure,
write, read. Users:
- topology: the workers' topology step (init container) declares the namespace's exchanges and
  queues (configure); binding and naming a dead-letter exchange are writes ("amq.default" for the
  retry queues), reads of the queues and exchanges. With several nodes it reads /api/nodes
  (--wait-for-nodes), which takes the "monitoring" tag;
- worker-POOL, per enabled pool: consumes its work and suspect queues; publishes follow-ups to the
  tasks and events exchanges, dead letters to the dlx, retries, suspects and replies through the
  default exchange. It declares nothing (WARREN_DECLARE_TOPOLOGY=false): it cannot delete or
  reconfigure a queue, its own included;
- api, when the API is deployed: publishes to the tasks exchange, and reads direct reply-to. With
  the operations API on (api.adminToken.existingSecret) also what `warren dlq` does: reads the
  pools' dead-letter queues (get, ack, purge), republishes to a work queue through the default
  exchange, and reads queue numbers from the management API (the "management" tag: the queues of
  its vhost, no administration);
- operator, when the operator reads the bundled broker: the management API's "monitoring" tag,
  no AMQP permission;
- helm-test: the helm test pods, in their own Warren namespace (WARREN_NAMESPACE-test) as a worker
  that declares, and a stock check to the deployed inventory pool through the tasks exchange.
*/}}
{{- define "warren.rabbitmq.users" -}}
{{- $ns := regexQuoteMeta .Values.warren.namespace -}}
{{- $test := regexQuoteMeta (include "warren.testNamespace" .) -}}
{{- $pools := list -}}
{{- range $pool, $spec := .Values.pools }}{{ if $spec.enabled }}{{ $pools = append $pools $pool }}{{ end }}{{ end -}}
{{- if $pools }}
topology:
  tags: {{ if gt (int .Values.rabbitmq.replicas) 1 }}[monitoring]{{ else }}[]{{ end }}
  configure: {{ printf "^%s\\." $ns | quote }}
  write: {{ printf "^(%s\\..*|amq\\.default)$" $ns | quote }}
  read: {{ printf "^%s\\." $ns | quote }}
{{- end }}
{{- range $pools }}
worker-{{ . }}:
  tags: []
  configure: "^$"
  write: {{ printf "^(%s\\.(tasks|events|dlx)|amq\\.default)$" $ns | quote }}
  read: {{ printf "^%s\\.%s(\\.suspect)?$" $ns (regexQuoteMeta .) | quote }}
{{- end }}
{{- if .Values.api.enabled }}
api:
  configure: "^$"
  {{- if .Values.api.adminToken.existingSecret }}
  {{- $quoted := list }}{{ range $pools }}{{ $quoted = append $quoted (regexQuoteMeta .) }}{{ end }}
  tags: [management]
  write: {{ printf "^(%s\\.tasks|amq\\.default)$" $ns | quote }}
  read: {{ printf "^(amq\\.rabbitmq\\.reply-to|%s\\.(%s)\\.dlq)$" $ns (join "|" $quoted) | quote }}
  {{- else }}
  tags: []
  write: {{ printf "^%s\\.tasks$" $ns | quote }}
  read: "^amq\\.rabbitmq\\.reply-to$"
  {{- end }}
{{- end }}
{{- if and .Values.operator.enabled (not .Values.operator.management.existingSecret) }}
operator:
  tags: [monitoring]
  configure: "^$"
  write: "^$"
  read: "^$"
{{- end }}
helm-test:
  tags: []
  configure: {{ printf "^%s\\." $test | quote }}
  write: {{ printf "^(%s\\..*|%s\\.tasks|amq\\.default)$" $test $ns | quote }}
  read: {{ printf "^(%s\\..*|amq\\.rabbitmq\\.reply-to)$" $test | quote }}
{{- end }}

{{/* The Warren namespace of the helm test pods, apart from the deployed pools'. */}}
{{- define "warren.testNamespace" -}}
{{- printf "%s-test" .Values.warren.namespace | trunc 63 -}}
{{- end }}

{{/*
RabbitMQ's definitions (imported on every boot: load_definitions), as JSON without a password:
each is a placeholder @@FILE@@ that the setup init container replaces with the content of the file
of that name (/secrets/rabbitmq-password, /users/USER).
*/}}
{{- define "warren.rabbitmq.definitions" -}}
{{- $users := list (dict "name" .Values.rabbitmq.auth.username "password" "@@rabbitmq-password@@" "tags" (list "administrator")) -}}
{{- $permissions := list (dict "user" .Values.rabbitmq.auth.username "vhost" "/" "configure" ".*" "write" ".*" "read" ".*") -}}
{{- range $user, $spec := include "warren.rabbitmq.users" . | fromYaml -}}
{{- if eq $user $.Values.rabbitmq.auth.username -}}
{{- fail (printf "rabbitmq.auth.username: %q is the name of a role's user; choose another name for the administrator" $user) -}}
{{- end -}}
{{- $users = append $users (dict "name" $user "password" (printf "@@%s@@" $user) "tags" $spec.tags) -}}
{{- $permissions = append $permissions (dict "user" $user "vhost" "/" "configure" $spec.configure "write" $spec.write "read" $spec.read) -}}
{{- end -}}
{{- dict "users" $users "vhosts" (list (dict "name" "/")) "permissions" $permissions | toPrettyJson -}}
{{- end }}

{{/*
Where the roles find the broker. Each role pod mounts its own user's credentials, as a file at
/etc/warren/broker (never an environment value). Called with (dict "root" $ "user" USER), and
"volume" for a volume name other than "broker".
- bundled RabbitMQ, generated passwords: Secret <fullname>-broker-USER holds the whole URL ("url");
- bundled RabbitMQ, rabbitmq.auth.usersExistingSecret: the URL carries no credentials (ConfigMap),
  the user name is WARREN_BROKER_USERNAME and the password that Secret's USER key, mounted as a
  file (WARREN_BROKER_PASSWORD_FILE);
- external broker: every role uses externalBroker.existingSecret, key externalBroker.key, the whole
  URL (the chart cannot create users on a broker it does not run).
*/}}
{{- define "warren.broker.host" -}}
{{- printf "%s.%s.svc.%s" (include "warren.rabbitmq.fullname" .) (include "warren.namespace" .) .Values.clusterDomain }}
{{- end }}

{{- define "warren.broker.externalSecret" -}}
{{- required "externalBroker.existingSecret: name the Secret holding the broker URL (rabbitmq.enabled is false)" .Values.externalBroker.existingSecret }}
{{- end }}

{{/* The generated Secret of a user's credentials. Called with (dict "root" $ "user" USER). */}}
{{- define "warren.broker.userSecret" -}}
{{- include "warren.suffixed" (dict "root" .root "suffix" (printf "broker-%s" .user)) }}
{{- end }}

{{/* A role pod's broker credentials volume. */}}
{{- define "warren.broker.volume" -}}
{{- $values := .root.Values -}}
- name: {{ default "broker" .volume }}
  secret:
    {{- if not $values.rabbitmq.enabled }}
    secretName: {{ include "warren.broker.externalSecret" .root }}
    items:
      - key: {{ $values.externalBroker.key }}
        path: url
    {{- else if $values.rabbitmq.auth.usersExistingSecret }}
    secretName: {{ $values.rabbitmq.auth.usersExistingSecret }}
    items:
      - key: {{ .user }}
        path: password
    {{- else }}
    secretName: {{ include "warren.broker.userSecret" . }}
    items:
      - key: url
        path: url
    {{- end }}
    defaultMode: 0440
{{- end }}

{{- define "warren.broker.volumeMount" -}}
- name: {{ default "broker" .volume }}
  mountPath: /etc/warren/broker
  readOnly: true
{{- end }}

{{/* Environment naming the broker file (and user); the rest comes from the ConfigMap. */}}
{{- define "warren.broker.env" -}}
{{- if and .root.Values.rabbitmq.enabled .root.Values.rabbitmq.auth.usersExistingSecret -}}
- name: WARREN_BROKER_USERNAME
  value: {{ .user | quote }}
- name: WARREN_BROKER_PASSWORD_FILE
  value: /etc/warren/broker/password
{{- else -}}
- name: WARREN_BROKER_URL_FILE
  value: /etc/warren/broker/url
{{- end }}
{{- end }}

{{/*
The hardened security contexts of every Warren container (the images' user 10001).
*/}}
{{- define "warren.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "warren.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A worker pool's settings: the chart-wide defaults (workers.*) under the pool's own keys.
Called with (dict "root" $ "pool" NAME "spec" POOLVALUES); returns YAML to fromYaml.
*/}}
{{- define "warren.pool" -}}
{{- $defaults := .root.Values.workers -}}
{{- $spec := .spec -}}
{{- $prefetch := int (default $defaults.prefetch $spec.prefetch) -}}
{{- $maxTask := int (default $defaults.maxTaskSeconds $spec.maxTaskSeconds) -}}
{{- $shutdownGrace := add (mul $maxTask $prefetch) $defaults.drainMarginSeconds -}}
replicas: {{ hasKey $spec "replicas" | ternary $spec.replicas $defaults.replicas }}
prefetch: {{ $prefetch }}
maxTaskSeconds: {{ $maxTask }}
target: {{ default .pool $spec.target | quote }}
shutdownGraceSeconds: {{ $shutdownGrace }}
terminationGracePeriodSeconds: {{ add $shutdownGrace 5 }}
resources:
  {{- toYaml (default $defaults.resources $spec.resources) | nindent 2 }}
env:
  {{- toYaml (default dict $spec.env) | nindent 2 }}
{{- end }}

{{/*
Small, fixed resources of the short-lived containers (init containers, helm test pods).
*/}}
{{- define "warren.smallResources" -}}
requests:
  cpu: 10m
  memory: 64Mi
limits:
  cpu: 500m
  memory: 192Mi
{{- end }}

{{/* Pod scheduling shared by every pod. */}}
{{- define "warren.scheduling" -}}
{{- with .Values.nodeSelector -}}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
checkov skips for an image pinned by tag instead of digest (annotations of the workload). Called
with (dict "image" IMAGEVALUES "values" "image.worker" "n" FIRSTINDEX). With a digest both checks
pass and nothing is skipped.
*/}}
{{- define "warren.tagSkips" -}}
{{- if not .image.digest -}}
checkov.io/skip{{ .n }}: CKV_K8S_43=pinned by its release tag; set {{ .values }}.digest to pin it by digest
checkov.io/skip{{ add1 .n }}: CKV_K8S_15=a release tag is immutable so IfNotPresent pulls it once (and runs kind-loaded images); a digest passes
{{- end }}
{{- end }}

{{/*
A pool's autoscaling: workers.autoscaling under the pool's own `autoscaling` keys, key by key
(a pool's `enabled: false` or `minReplicas: 0` must win, which sprig's merges do not allow).
Called with (dict "root" $ "pool" NAME "spec" POOLVALUES); returns YAML to fromYaml.
*/}}
{{- define "warren.autoscaling" -}}
{{- $d := .root.Values.workers.autoscaling -}}
{{- $a := default dict .spec.autoscaling -}}
{{- range $key := list "enabled" "minReplicas" "maxReplicas" "messagesPerReplica" "drainSeconds" "activationMessages" "pollSeconds" }}
{{ $key }}: {{ hasKey $a $key | ternary (index $a $key) (index $d $key) | toJson }}
{{- end }}
queue: {{ default (printf "%s.%s" .root.Values.warren.namespace .pool) $a.queue | quote }}
{{- range $direction := list "scaleUp" "scaleDown" }}
{{- $own := default dict (index $a $direction) }}
{{ $direction }}:
  {{- range $key := list "stabilizationSeconds" "maxStep" }}
  {{ $key }}: {{ hasKey $own $key | ternary (index $own $key) (index (index $d $direction) $key) | toJson }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "warren.operator.fullname" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "operator") }}
{{- end }}

{{/*
Where the operator finds the management API, for a WorkerAutoscaler's spec (YAML to fromYaml):
operator.management.existingSecret if set; else, with the bundled RabbitMQ, the password of its own
"operator" user (the "monitoring" tag, no AMQP permission: warren.rabbitmq.users) with a URL naming
that user; else the external broker's URL Secret (management on 15672 of its host, with the URL's
credentials).
*/}}
{{- define "warren.operator.management" -}}
{{- $m := .Values.operator.management -}}
{{- if $m.existingSecret }}
secretName: {{ $m.existingSecret | quote }}
urlKey: {{ $m.urlKey | quote }}
passwordKey: {{ $m.passwordKey | quote }}
url: {{ $m.url | quote }}
{{- else if .Values.rabbitmq.enabled }}
{{- if .Values.rabbitmq.auth.usersExistingSecret }}
secretName: {{ .Values.rabbitmq.auth.usersExistingSecret | quote }}
passwordKey: operator
{{- else }}
secretName: {{ include "warren.broker.userSecret" (dict "root" . "user" "operator") | quote }}
passwordKey: password
{{- end }}
# No such key: the URL is managementUrl.
urlKey: url
url: {{ default (printf "http://operator@%s:15672" (include "warren.broker.host" .)) $m.url | quote }}
{{- else }}
secretName: {{ include "warren.broker.externalSecret" . | quote }}
urlKey: {{ .Values.externalBroker.key | quote }}
passwordKey: {{ $m.passwordKey | quote }}
url: {{ $m.url | quote }}
{{- end }}
{{- end }}

{{/* The Deployments the operator scales: those of the pools whose autoscaling is enabled. */}}
{{- define "warren.autoscaledDeployments" -}}
{{- range $pool, $spec := .Values.pools }}
{{- if $spec.enabled }}
{{- $auto := include "warren.autoscaling" (dict "root" $ "pool" $pool "spec" $spec) | fromYaml }}
{{- if $auto.enabled }}
- {{ include "warren.worker.fullname" (dict "root" $ "pool" $pool) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity (256Mi, 1Gi, 2G, 1500000000) in bytes, as an integer string.
*/}}
{{- define "warren.bytes" -}}
{{- $quantity := toString . -}}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- $suffix := regexFind "(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)$" $quantity -}}
{{- printf "%.0f" (floor (mulf (float64 (trimSuffix $suffix $quantity)) (get $units $suffix))) -}}
{{- end }}

{{/*
What RabbitMQ may count on (total_memory_available_override_value), in bytes: the container's
memory limit less headroom for the Erlang VM beyond what RabbitMQ tracks, a fifth of the limit
but at most 2 GiB (the RabbitMQ Cluster Operator's rule). Without it RabbitMQ reads the host's RAM.
*/}}
{{- define "warren.rabbitmq.memoryAvailable" -}}
{{- $limit := int64 (include "warren.bytes" .Values.rabbitmq.resources.limits.memory) -}}
{{- sub $limit (min (div $limit 5) 2147483648) -}}
{{- end }}

{{/*
A worker Deployment's replicas. Not autoscaled: the pool's count. Autoscaled: the live count when
the Deployment exists (lookup), so that neither switching autoscaling on (Helm would drop the
field and Kubernetes reset it to 1) nor a later upgrade undoes what the operator set; else none
(a new Deployment starts at 1 and the operator scales it within a poll). Called with
(dict "autoscaled" BOOL "replicas" N "live" LOOKUP-RESULT).
*/}}
{{- define "warren.workerReplicas" -}}
{{- if not .autoscaled -}}
replicas: {{ .replicas }}
{{- else if and .live .live.spec (hasKey .live.spec "replicas") -}}
replicas: {{ .live.spec.replicas }}
{{- end -}}
{{- end }}

{{/*
The topology step's command: wait for the broker (and, for the bundled cluster, every node),
then declare. Called with (dict "root" $ "target" POOLTARGET).
*/}}
{{- define "warren.topologyCommand" -}}
- warren
- topology
- apply
- {{ .target | quote }}
- --wait
- {{ .root.Values.workers.topologyWaitSeconds | quote }}
{{- if and .root.Values.rabbitmq.enabled (gt (int .root.Values.rabbitmq.replicas) 1) }}
- --wait-for-nodes
- {{ .root.Values.rabbitmq.replicas | quote }}
{{- end }}
{{- end }}

{{/*
The shop's database (WARREN_SHOP_DATABASE_*), shared by the API and every pool's workers.
- bundled PostgreSQL, generated password: <fullname>-database holds the whole URL (key "url");
- bundled PostgreSQL, database.postgresql.auth.existingSecret: the URL carries no password
  (ConfigMap), the password is that Secret's "postgres-password" key, mounted as a file;
- external: database.external.existingSecret, key database.external.key, holds the whole URL.
Like the broker's, the URL or password is always a mounted file, never an environment value.
*/}}
{{- define "warren.postgresql.fullname" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "postgresql" "max" 52) }}
{{- end }}

{{- define "warren.postgresql.headless" -}}
{{- include "warren.suffixed" (dict "root" . "suffix" "postgresql-headless") }}
{{- end }}

{{- define "warren.postgresql.secretName" -}}
{{- default (include "warren.postgresql.fullname" .) .Values.database.postgresql.auth.existingSecret }}
{{- end }}

{{- define "warren.postgresql.host" -}}
{{- printf "%s.%s.svc.%s" (include "warren.postgresql.fullname" .) (include "warren.namespace" .) .Values.clusterDomain }}
{{- end }}

{{- define "warren.postgresql.image" -}}
{{- $image := .Values.database.postgresql.image -}}
{{- $ref := $image.repository -}}
{{- if $image.registry }}{{ $ref = printf "%s/%s" $image.registry $ref }}{{ end -}}
{{- if $image.digest }}
{{- printf "%s@%s" $ref $image.digest }}
{{- else }}
{{- printf "%s:%s" $ref $image.tag }}
{{- end }}
{{- end }}

{{- define "warren.database.urlSecret" -}}
{{- if not .Values.database.postgresql.enabled }}
{{- required "database.external.existingSecret: name the Secret holding the database URL (database.postgresql.enabled is false)" .Values.database.external.existingSecret }}
{{- else if not .Values.database.postgresql.auth.existingSecret }}
{{- include "warren.suffixed" (dict "root" . "suffix" "database") }}
{{- end }}
{{- end }}

{{/* The database credentials volume of a role pod. */}}
{{- define "warren.database.volume" -}}
- name: database
  secret:
    {{- if include "warren.database.urlSecret" . }}
    secretName: {{ include "warren.database.urlSecret" . }}
    items:
      - key: {{ if .Values.database.postgresql.enabled }}url{{ else }}{{ .Values.database.external.key }}{{ end }}
        path: url
    {{- else }}
    secretName: {{ .Values.database.postgresql.auth.existingSecret }}
    items:
      - key: postgres-password
        path: password
    {{- end }}
    defaultMode: 0440
{{- end }}

{{- define "warren.database.volumeMount" -}}
- name: database
  mountPath: /etc/warren/database
  readOnly: true
{{- end }}

{{/* Environment naming the database file; a URL without a password comes from the ConfigMap. */}}
{{- define "warren.database.env" -}}
{{- if include "warren.database.urlSecret" . -}}
- name: WARREN_SHOP_DATABASE_URL_FILE
  value: /etc/warren/database/url
{{- else -}}
- name: WARREN_SHOP_DATABASE_PASSWORD_FILE
  value: /etc/warren/database/password
{{- end }}
{{- end }}

{{/*
The init container that brings the database to the schema of this release before a role starts:
`warren-shop db upgrade`, idempotent, and safe when every pod of the release runs it at once (they
take turns on a lock). It waits up to WARREN_SHOP_DATABASE_RETRY_SECONDS for the database; a failure
restarts it, so a role never starts against a schema it does not know.
Called with (dict "root" $ "image" IMAGE).
*/}}
{{- define "warren.database.migrate" -}}
- name: db-upgrade
  image: {{ .image }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: ["warren-shop", "db", "upgrade", "--wait", "120"]
  envFrom:
    - configMapRef:
        name: {{ include "warren.fullname" .root }}
  env:
    {{- include "warren.database.env" .root | nindent 4 }}
  securityContext:
    {{- include "warren.containerSecurityContext" .root | nindent 4 }}
  resources:
    {{- include "warren.smallResources" .root | nindent 4 }}
  volumeMounts:
    {{- include "warren.database.volumeMount" .root | nindent 4 }}
{{- end }}
