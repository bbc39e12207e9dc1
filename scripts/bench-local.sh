#!/usr/bin/env bash
# Local mode under load: the gateway with its processor and registry (not pinned: they share the
# machine's cores with the load generator), a fleet of virtual devices, and /api/status sampled
# every second (accepted rate, spool depth, processor lag). Usage:
#   scripts/bench-local.sh [devices] [inflight] [duration-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-256}; INFLIGHT=${2:-2}; SECS=${3:-10}
COAP_PORT=${COAP_PORT:-25683}; HTTP_PORT=${HTTP_PORT:-28080}
go build -o bin/coapgw ./cmd/coapgw
go build -o bin/coapgw-bench ./cmd/coapgw-bench
data=$(mktemp -d /tmp/coapgw-bench-local.XXXXXX)
echo "\$ bin/coapgw serve --coap-addr 127.0.0.1:$COAP_PORT --http-addr 127.0.0.1:$HTTP_PORT --data-dir $data"
bin/coapgw serve --coap-addr 127.0.0.1:$COAP_PORT --http-addr 127.0.0.1:$HTTP_PORT --data-dir "$data" 2>"$data.log" &
gw=$!
trap 'kill -TERM $gw 2>/dev/null; wait $gw 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done
status() {
  curl -s "127.0.0.1:$HTTP_PORT/api/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("accepted/s %7.0f  spool depth %7d  processor lag %6.2f s  messages %d" % (d["acceptedPerSecond"], d["spoolDepth"], d["processorLagSeconds"], d["messages"]))'
}
echo "\$ bin/coapgw-bench --target 127.0.0.1:$COAP_PORT --devices $DEVICES --inflight $INFLIGHT --duration ${SECS}s --warmup 0s"
bin/coapgw-bench --target 127.0.0.1:$COAP_PORT --devices "$DEVICES" --inflight "$INFLIGHT" --duration "${SECS}s" --warmup 0s >"$data.bench" &
lg=$!
while kill -0 $lg 2>/dev/null; do sleep 1; status; done
wait $lg || true
grep -E "delivered/s|latency 2.04|lost" "$data.bench"
echo "== after the load, until the spool is drained:"
for _ in $(seq 1 30); do status | tee "$data.last"; grep -q "spool depth       0" "$data.last" && break; sleep 1; done
