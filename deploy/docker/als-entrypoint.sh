#!/usr/bin/env bash
# Entrypoint of the ALS image.
#   als-entrypoint executor   -> a Spark executor, as started by a Spark-on-Kubernetes driver (the driver
#                                sets SPARK_DRIVER_URL, SPARK_EXECUTOR_* and SPARK_JAVA_OPT_<n> on the pod)
#   als-entrypoint ARGS...    -> recsys ARGS... (serve als, worker als, train-als, consume als-trigger)
set -euo pipefail

if [[ "${1:-}" != "executor" ]]; then
  exec recsys "$@"
fi

# JVM options the driver handed over, in their numeric order (SPARK_JAVA_OPT_0, _1, ...).
java_opts=()
while IFS= read -r name; do
  java_opts+=("${!name}")
done < <(compgen -e | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n)

: "${SPARK_EXECUTOR_MEMORY:?set by the Spark driver}"
exec "${JAVA_HOME}/bin/java" \
  "${java_opts[@]}" \
  -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
  -cp "${SPARK_HOME}/jars/*" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "${SPARK_DRIVER_URL}" \
  --executor-id "${SPARK_EXECUTOR_ID}" \
  --cores "${SPARK_EXECUTOR_CORES}" \
  --app-id "${SPARK_APPLICATION_ID}" \
  --hostname "${SPARK_EXECUTOR_POD_IP}" \
  --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
  --podName "${SPARK_EXECUTOR_POD_NAME}"
