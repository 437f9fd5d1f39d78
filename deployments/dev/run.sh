#!/usr/bin/env bash
# Starts Tollgate on one machine: the api with an embedded NATS server that
# the other processes connect to, a worker with the sample corpus loaded,
# and the alerter. Dev auth, offline generator, no accounts, no network.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

export DATA_DIR="${DATA_DIR:-./data}"
export AUTH_MODE=dev
export LOG_FORMAT="${LOG_FORMAT:-text}"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8080}"
export NATS_LISTEN="${NATS_LISTEN:-127.0.0.1:4222}"
api_url="http://${HTTP_ADDR}"
nats_url="nats://${NATS_LISTEN}"
mkdir -p "$DATA_DIR"

pids=()
cleanup() {
	trap - INT TERM EXIT
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
}
trap cleanup INT TERM EXIT

echo "starting api on $api_url (embedded NATS on $nats_url, data in $DATA_DIR)"
NATS_URL= bin/api > >(sed -u 's/^/[api]     /') 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
	curl -fsS "$api_url/readyz" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fsS "$api_url/readyz" >/dev/null || { echo "api did not become ready"; exit 1; }

export NATS_URL="$nats_url"
bin/worker ingest samples/corpus | sed -u 's/^/[ingest]  /'
bin/worker > >(sed -u 's/^/[worker]  /') 2>&1 &
pids+=($!)
if [[ -x bin/alerter ]]; then
	bin/alerter > >(sed -u 's/^/[alerter] /') 2>&1 &
	pids+=($!)
fi

cat <<MSG

Tollgate is running. Open $api_url/ in a browser (the "dev token" button signs
you in), or in another terminal:

  TOKEN=\$(make -s token USER=alice)
  curl -s -X POST $api_url/v1/queries -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"question":"How many requests can I make per day?"}'
  curl -s "$api_url/v1/queries/<id>?wait=10" -H "Authorization: Bearer \$TOKEN"

Budget alerts go to $DATA_DIR/mail/alerts.log; the README has the full walk-through.

Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
