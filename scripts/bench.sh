#!/usr/bin/env bash
# bench.sh — measure the gateway on two pinned cores (make bench; docs/benchmarks.md).
#
# Builds bin/coapgw, starts `coapgw serve --process none` pinned to one core (fsync on, the
# default) with a fresh data dir — the gateway core: CoAP, ingest and the spool; in local mode the
# processor would share that one core (scripts/bench-local.sh measures the whole pipeline) — waits for /readyz, runs `coapgw bench` pinned to the other core — a CON run,
# then a NON run — with the gateway's pid and port so the load generator also reports the
# gateway's CPU per delivered message, peak RSS and UDP drops, then stops the gateway with
# SIGTERM and reports how it exited. Every command is printed before it runs, so each figure
# can be quoted with the command that produced it.
#
# Settings (environment): DURATION (20s), WARMUP (1s), DEVICES (256), INFLIGHT (2),
# PAYLOAD_SIZE (64), COAP_PORT (25683), HTTP_PORT (28080), GW_CPU (0), LG_CPU (1),
# GW_ARGS (flags for serve, default --process none), BENCH_ARGS (extra flags for bench), OUT_DIR (results;
# default a new directory under /tmp), SKIP_BUILD=1 (use the existing bin/coapgw), SKIP_NON=1.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-1s}
DEVICES=${DEVICES:-256}
INFLIGHT=${INFLIGHT:-2}
PAYLOAD_SIZE=${PAYLOAD_SIZE:-64}
COAP_PORT=${COAP_PORT:-25683}
HTTP_PORT=${HTTP_PORT:-28080}
GW_CPU=${GW_CPU:-0}
LG_CPU=${LG_CPU:-1}
GW_ARGS=${GW_ARGS---process none}
BENCH_ARGS=${BENCH_ARGS:-}
BIN=bin/coapgw

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }
show() { printf '$ %s\n' "$*"; }

for tool in taskset curl ss; do
	command -v "$tool" >/dev/null || die "needs $tool"
done
ncpu=$(nproc)
if [ "$ncpu" -lt 2 ] || [ "$GW_CPU" = "$LG_CPU" ]; then
	die "needs two cores (nproc=$ncpu, GW_CPU=$GW_CPU, LG_CPU=$LG_CPU): the gateway and the load generator each get one"
fi
for port in "$COAP_PORT"; do
	[ -z "$(ss -Hlun "sport = :$port")" ] || die "UDP port $port is in use; set COAP_PORT"
done
[ -z "$(ss -Hltn "sport = :$HTTP_PORT")" ] || die "TCP port $HTTP_PORT is in use; set HTTP_PORT"

# One socket per virtual device, plus the gateway's files.
want_nofile=$((DEVICES + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_nofile" ]; then
	ulimit -n "$want_nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)" ||
		die "cannot raise the open-file limit to $want_nofile (hard limit $(ulimit -Hn))"
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
	show go build -o "$BIN" ./cmd/coapgw
	go build -o "$BIN" ./cmd/coapgw
fi
[ -x "$BIN" ] || die "$BIN missing"

OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/coapgw-bench.XXXXXX)}
mkdir -p "$OUT_DIR"
DATA_DIR=$(mktemp -d /tmp/coapgw-bench-data.XXXXXX)
GW_PID=

cleanup() {
	if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -KILL "$GW_PID" 2>/dev/null || true
	fi
	rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "machine"
{
	echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:    $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
	echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') × $ncpu"
	echo "kernel:    $(uname -r)"
	echo "go:        $(go version | cut -d' ' -f3-)"
	echo "loadavg:   $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
	echo "data dir:  $DATA_DIR ($(df -PT "$DATA_DIR" | awk 'NR==2 {print $2}'))"
	echo "nofile:    $(ulimit -n)"
} | tee "$OUT_DIR/machine.txt"

gw_cmd=(env GOMAXPROCS=1 taskset -c "$GW_CPU" "$BIN" serve
	--coap-addr "127.0.0.1:$COAP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --data-dir "$DATA_DIR")
# shellcheck disable=SC2206
gw_cmd+=($GW_ARGS)
log "start the gateway"
show "${gw_cmd[@]}"
"${gw_cmd[@]}" >"$OUT_DIR/gateway.log" 2>&1 &
GW_PID=$!

ready=
for _ in $(seq 300); do
	kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$OUT_DIR/gateway.log" >&2; die "gateway exited during start-up"; }
	if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz" || true)" = 200 ]; then
		ready=1
		break
	fi
	sleep 0.1
done
[ -n "$ready" ] || { tail -20 "$OUT_DIR/gateway.log" >&2; die "gateway not ready after 30 s"; }
log "gateway pid $GW_PID ready"

status=0
bench() { # bench NAME [extra bench flags]
	local name=$1
	shift
	local cmd=(env GOMAXPROCS=1 taskset -c "$LG_CPU" "$BIN" bench
		--target "127.0.0.1:$COAP_PORT" --devices "$DEVICES" --inflight "$INFLIGHT"
		--payload-size "$PAYLOAD_SIZE" --duration "$DURATION" --warmup "$WARMUP"
		--gateway-pid "$GW_PID" --gateway-port "$COAP_PORT" "$@")
	# shellcheck disable=SC2206
	cmd+=($BENCH_ARGS)
	log "$name run"
	show "${cmd[@]}"
	"${cmd[@]}" | tee "$OUT_DIR/$name.txt" || status=1
	kill -0 "$GW_PID" 2>/dev/null || die "gateway died during the $name run"
}
bench con
if [ "${SKIP_NON:-}" != 1 ]; then
	# Peak RSS (VmHWM) is since the gateway started, so it covers the CON run too.
	bench non --non
fi

log "stop the gateway (SIGTERM)"
show kill -TERM "$GW_PID"
t0=$(date +%s.%N)
kill -TERM "$GW_PID"
gw_status=
for _ in $(seq 300); do
	if ! kill -0 "$GW_PID" 2>/dev/null; then
		gw_status=0
		wait "$GW_PID" || gw_status=$?
		break
	fi
	sleep 0.1
done
if [ -z "$gw_status" ]; then
	kill -KILL "$GW_PID" 2>/dev/null || true
	wait "$GW_PID" 2>/dev/null || true
	echo "gateway: did not exit within 30 s of SIGTERM; killed" | tee -a "$OUT_DIR/summary.txt"
	status=1
else
	printf 'gateway: exited with status %s %s s after SIGTERM\n' "$gw_status" \
		"$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" | tee -a "$OUT_DIR/summary.txt"
	[ "$gw_status" = 0 ] || status=1
fi
GW_PID=
echo "spool after the runs: $(du -sh "$DATA_DIR" | cut -f1)" | tee -a "$OUT_DIR/summary.txt"
log "results in $OUT_DIR (machine.txt, con.txt, non.txt, gateway.log)"
exit $status
