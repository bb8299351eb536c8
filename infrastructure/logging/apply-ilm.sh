#!/bin/sh
# Apply the log retention of the operations guide to Elasticsearch (idempotent):
#   application 30 days, access 90, error 180, audit 365.
# For each class: the lifecycle policy cse-<class> from ilm/<class>.json and an index
# template cse-<class> binding the daily indices cse-<class>-* that Filebeat writes to it.
# Runs as the stack's one-shot `log-setup` service (configs mounted under /setup); by hand:
#   ES_URL=http://127.0.0.1:9200 ILM_DIR=infrastructure/logging/ilm sh infrastructure/logging/apply-ilm.sh
set -eu

ES_URL=${ES_URL:-http://elasticsearch:9200}
ILM_DIR=${ILM_DIR:-/setup/ilm}
WAIT_S=${WAIT_S:-300}

waited=0
until curl -fsS "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; do
  if [ "$waited" -ge "$WAIT_S" ]; then
    echo "apply-ilm: Elasticsearch at $ES_URL not ready after ${WAIT_S}s" >&2
    exit 1
  fi
  sleep 5
  waited=$((waited + 5))
done

put() {
  # put <path> <json body or @file>
  curl -fsS -X PUT -H 'Content-Type: application/json' "$ES_URL/$1" --data-binary "$2" >/dev/null
}

for class in application access error audit; do
  put "_ilm/policy/cse-$class" "@$ILM_DIR/$class.json"
  put "_index_template/cse-$class" "{
    \"index_patterns\": [\"cse-$class-*\"],
    \"priority\": 200,
    \"template\": {
      \"settings\": {
        \"index.lifecycle.name\": \"cse-$class\",
        \"index.number_of_shards\": 1,
        \"index.number_of_replicas\": 0
      },
      \"mappings\": {
        \"dynamic\": true,
        \"properties\": {
          \"@timestamp\": {\"type\": \"date\"},
          \"log_type\": {\"type\": \"keyword\"},
          \"level\": {\"type\": \"keyword\"},
          \"event\": {\"type\": \"keyword\"},
          \"service\": {\"type\": \"keyword\"}
        }
      }
    },
    \"_meta\": {\"managed_by\": \"infrastructure/logging/apply-ilm.sh\"}
  }"
  echo "apply-ilm: cse-$class policy and template applied"
done
