#!/usr/bin/env bash
# Waits until every container of the compose project is running and, where it has a health
# check, healthy; fails (printing the laggards' logs) after $2 seconds. Usage: wait.sh PROJECT [SECONDS]
set -euo pipefail
project=$1
limit=${2:-300}
start=$(date +%s)
while :; do
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
  if [ -z "$ids" ]; then echo "wait: no containers in project $project" >&2; exit 1; fi
  waiting=$(docker inspect --format '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' $ids \
    | awk '$2 != "running" || ($3 != "healthy" && $3 != "none") {print $1 "(" $2 "/" $3 ")"}')
  if [ -z "$waiting" ]; then
    echo "wait: all $(echo "$ids" | wc -l) containers of $project are up after $(( $(date +%s) - start )) s"
    exit 0
  fi
  if [ $(( $(date +%s) - start )) -ge "$limit" ]; then
    echo "wait: still not ready after $limit s: $waiting" >&2
    for n in $waiting; do docker logs --tail 30 "${n%%(*}" 2>&1 | sed "s|^|  ${n%%(*}: |" >&2 || true; done
    exit 1
  fi
  # A container that exited will not come back by waiting.
  if echo "$waiting" | grep -q '(exited'; then
    echo "wait: exited: $waiting" >&2
    for n in $waiting; do docker logs --tail 30 "${n%%(*}" 2>&1 | sed "s|^|  ${n%%(*}: |" >&2 || true; done
    exit 1
  fi
  sleep 2
done
