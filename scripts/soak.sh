#!/usr/bin/env bash
# Soak test (make soak; docs/soak.md): the real gateway binary in local mode with a fresh data
# directory, under SOAK_DURATION (default 30m) of mixed load from cmd/coapgw-soak — steady CON
# and NON devices, 10 % hostile datagrams, a burst of new device names at half time — with one
# kill -9 (at 1/6) and one SIGTERM (at 1/3), each followed by a restart. Every SOAK_SAMPLE
# seconds it writes the gateway's VmRSS, descriptors, gauges (dedup, limiter, things, spool),
# Go heap in use, Go runtime memory and goroutines to samples.csv. At the end it waits for the
# processor to drain the spool, stops the gateway and checks that every record acknowledged with
# 2.04 is in the registry, then plots memory over time (soak-rss.png) and writes what grew on
# the Go heap over the last third (heap-growth.txt, from two heap profiles: the gateway runs
# with --pprof on loopback). It fails when a record is lost, a hostile datagram was stored, a
# restart failed, or RSS grew more than SOAK_RSS_GROWTH_MAX (default 0.25) over the last third
# of the run (after the last restart and the burst: memory must be flat after warm-up).
#
#   SOAK_DURATION=3m scripts/soak.sh        # a short try
#
# Settings (environment): SOAK_DURATION, SOAK_DEVICES (400), SOAK_INTERVAL (2s per device),
# SOAK_HOSTILE (0.10), SOAK_BURST_NAMES (5000), SOAK_SAMPLE (5 s), SOAK_OUT (bin/soak: CSV,
# logs, summaries, the plot), SOAK_COAP_PORT (35683), SOAK_HTTP_PORT (38080).
set -euo pipefail
cd "$(dirname "$0")/.."

to_secs() { # 90s, 3m, 1h, or plain seconds
  local v=$1
  case $v in
    *h) echo $(( ${v%h} * 3600 )) ;;
    *m) echo $(( ${v%m} * 60 )) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}
DUR=$(to_secs "${SOAK_DURATION:-30m}")
DEVICES=${SOAK_DEVICES:-400}
INTERVAL=${SOAK_INTERVAL:-2s}
HOSTILE=${SOAK_HOSTILE:-0.10}
BURST=${SOAK_BURST_NAMES:-5000}
SAMPLE=${SOAK_SAMPLE:-5}
OUT=${SOAK_OUT:-bin/soak}
COAP_PORT=${SOAK_COAP_PORT:-35683}
HTTP_PORT=${SOAK_HTTP_PORT:-38080}
GROWTH_MAX=${SOAK_RSS_GROWTH_MAX:-0.25}
KILL_AT=$((DUR / 6)); TERM_AT=$((DUR / 3)); BURST_AT=$((DUR / 2))
if (( DUR < 60 )); then echo "soak: SOAK_DURATION must be at least 60s" >&2; exit 2; fi

python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib >/dev/null 2>&1 ||
  python3 -m pip install -q --user --break-system-packages matplotlib
go build -o bin/coapgw ./cmd/coapgw
go build -o bin/coapgw-soak ./cmd/coapgw-soak

rm -rf "$OUT"; mkdir -p "$OUT"
data=$OUT/data
gw=
GW_ARGS=(serve --coap-addr "127.0.0.1:$COAP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --data-dir "$data"
  --history-max-points 1000000 --device-rate 120 --device-burst 10 --log-level info --pprof)
t0=$(date +%s)
now() { echo $(( $(date +%s) - t0 )); }
event() { echo "$(now),$1" >>"$OUT/events.csv"; echo "soak: t=$(now)s $1"; }

start_gw() {
  bin/coapgw "${GW_ARGS[@]}" >>"$OUT/gateway.log" 2>&1 &
  gw=$!
  echo "$gw" >"$OUT/gw.pid"
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && { event "ready pid=$gw"; return 0; }
    kill -0 "$gw" 2>/dev/null || break
    sleep 0.1
  done
  event "gateway did not become ready"; return 1
}

metric() { # name (with labels, as exposed) from the metrics text in $m
  awk -v n="$1" '$1 == n { print $2; exit }' <<<"$m"
}
sampler() {
  echo "t_s,pid,rss_kib,fds,dedup_entries,limiter_entries,things,spool_bytes,spool_depth,accepted,processor_lag_s,heap_inuse_bytes,go_sys_bytes,goroutines,load1" >"$OUT/samples.csv"
  while :; do
    local pid rss fds m=
    pid=$(cat "$OUT/gw.pid" 2>/dev/null || true)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
    [[ -n $rss ]] || fds=
    m=$(curl -s --max-time 2 "127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null || true)
    echo "$(now),$pid,$rss,$fds,$(metric coapgw_coap_dedup_entries),$(metric coapgw_ingest_rate_limit_devices),$(metric coapgw_ingest_things),$(metric coapgw_spool_size_bytes),$(metric coapgw_spool_depth_records),$(metric 'coapgw_ingest_records_total{result="accepted"}'),$(metric coapgw_processor_lag_seconds),$(metric go_memstats_heap_inuse_bytes),$(metric go_memstats_sys_bytes),$(metric go_goroutines),$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/samples.csv"
    sleep "$SAMPLE"
  done
}
cleanup() {
  [[ -n ${sp:-} ]] && kill "$sp" 2>/dev/null
  [[ -n ${lg:-} ]] && kill "$lg" 2>/dev/null
  [[ -n $gw ]] && kill -TERM "$gw" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
wait_until() { local s=$(( $1 - $(now) )); (( s > 0 )) && sleep "$s"; return 0; }

echo "soak: ${DUR}s, $DEVICES devices every $INTERVAL, hostile $HOSTILE, burst of $BURST names at ${BURST_AT}s, kill -9 at ${KILL_AT}s, SIGTERM at ${TERM_AT}s; output in $OUT"
echo "soak: bin/coapgw ${GW_ARGS[*]}"
echo "t_s,event" >"$OUT/events.csv"
fail=0
start_gw || exit 1
sampler &
sp=$!
LOAD_ARGS=(load --target "127.0.0.1:$COAP_PORT" --devices "$DEVICES" --interval "$INTERVAL" --duration "${DUR}s"
  --hostile "$HOSTILE" --burst-at "${BURST_AT}s" --burst-names "$BURST" --acks "$OUT/acks.txt")
echo "soak: bin/coapgw-soak ${LOAD_ARGS[*]}"
bin/coapgw-soak "${LOAD_ARGS[@]}" >"$OUT/load.json" 2>"$OUT/load.log" &
lg=$!

wait_until "$KILL_AT"
kill -KILL "$gw"; wait "$gw" 2>/dev/null || true
event "kill -9"
start_gw || fail=1
wait_until "$TERM_AT"
kill -TERM "$gw"; rc=0; wait "$gw" || rc=$?
event "SIGTERM (exit $rc)"
(( rc == 0 )) || fail=1
start_gw || fail=1
echo "$BURST_AT,burst of $BURST new names" >>"$OUT/events.csv"
# Go heap profiles at the start of the last third and at the end: what grew in between.
heap() { curl -s --max-time 30 -o "$OUT/heap-$1.pb.gz" "127.0.0.1:$HTTP_PORT/debug/pprof/heap?gc=1" || true; }
wait_until $((2 * DUR / 3)); heap warm

rc=0; wait "$lg" || rc=$?; lg=
event "load done (exit $rc)"
heap end # after the load: its forced GC must not lower the last samples the report compares
(( rc == 0 )) || fail=1
# The processor takes what the spool holds; then stop the gateway and check the registry.
for _ in $(seq 1 600); do
  m=$(curl -s --max-time 2 "127.0.0.1:$HTTP_PORT/metrics" || true)
  [[ $(metric coapgw_spool_depth_records) == 0 ]] && break
  sleep 0.5
done
event "spool drained (depth $(metric coapgw_spool_depth_records))"
sleep "$SAMPLE"
kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true; sp=
kill -TERM "$gw"; rc=0; wait "$gw" || rc=$?; gw=
event "final SIGTERM (exit $rc)"
(( rc == 0 )) || fail=1

rc=0; bin/coapgw-soak check --data-dir "$data" --acks "$OUT/acks.txt" >"$OUT/check.json" 2>"$OUT/check.log" || rc=$?
cat "$OUT/check.log" >&2
(( rc == 0 )) || fail=1

[[ -s $OUT/heap-warm.pb.gz && -s $OUT/heap-end.pb.gz ]] &&
  go tool pprof -sample_index=inuse_space -top -base "$OUT/heap-warm.pb.gz" bin/coapgw "$OUT/heap-end.pb.gz" >"$OUT/heap-growth.txt" 2>/dev/null || true
rc=0; python3 scripts/soak_report.py "$OUT" "$TERM_AT" "$BURST_AT" "$GROWTH_MAX" || rc=$?
(( rc == 0 )) || fail=1
if (( fail )); then echo "soak: FAILED (see $OUT)"; exit 1; fi
echo "soak: passed"
