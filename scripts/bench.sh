#!/usr/bin/env bash
# bench.sh — measure the gateway on two pinned cores, side by side with libcoap (make bench;
# docs/benchmarks.md).
#
# Builds bin/coapgw and bin/coapgw-bench, starts `coapgw serve --process none` pinned to one core
# (fsync on, the default) with a fresh data dir — the gateway core: CoAP, ingest and the spool; in
# local mode the processor would share that one core (scripts/bench-local.sh measures the whole
# pipeline) — waits for /readyz, runs coapgw-bench pinned to the other core — a CON run, then a NON
# run — with the gateway's pid and port so the load generator also reports the gateway's CPU per
# delivered message, peak RSS and UDP drops, then stops the gateway with SIGTERM and reports how
# it exited.
#
# Right after, the same load (same devices, in flight, payload, warm-up and window) runs against
# libcoap's example server, coap-server-notls (Debian libcoap3-bin), pinned to the same core as
# the gateway, with PUT /example_data (which it answers 2.04) instead of POST /bench/dev-<n>; then
# both servers' delivered/s and CPU µs per message are printed side by side with the ratio
# coapgw/libcoap. Skipped when coap-server-notls is not installed or SKIP_LIBCOAP=1.
#
# Every command is printed before it runs, so each figure can be quoted with the command that
# produced it.
#
# Settings (environment): DURATION (20s), WARMUP (1s), DEVICES (256), INFLIGHT (2),
# PAYLOAD_SIZE (64), COAP_PORT (25683), HTTP_PORT (28080), LIBCOAP_PORT (25684), GW_CPU (0),
# LG_CPU (1), GW_ARGS (flags for serve, default --process none), BENCH_ARGS (extra flags for
# coapgw-bench, both servers), LIBCOAP_ARGS (extra flags for coap-server-notls), OUT_DIR (results;
# default a new directory under /tmp), SKIP_BUILD=1 (use the existing bin/coapgw and
# bin/coapgw-bench), SKIP_NON=1, SKIP_LIBCOAP=1.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-1s}
DEVICES=${DEVICES:-256}
INFLIGHT=${INFLIGHT:-2}
PAYLOAD_SIZE=${PAYLOAD_SIZE:-64}
COAP_PORT=${COAP_PORT:-25683}
HTTP_PORT=${HTTP_PORT:-28080}
LIBCOAP_PORT=${LIBCOAP_PORT:-25684}
GW_CPU=${GW_CPU:-0}
LG_CPU=${LG_CPU:-1}
GW_ARGS=${GW_ARGS---process none}
BENCH_ARGS=${BENCH_ARGS:-}
LIBCOAP_ARGS=${LIBCOAP_ARGS:-}
BIN=bin/coapgw
BENCH_BIN=bin/coapgw-bench
LIBCOAP_BIN=coap-server-notls

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
libcoap=1 skipped=
if [ "${SKIP_LIBCOAP:-}" = 1 ]; then
	libcoap= skipped="SKIP_LIBCOAP=1: no libcoap comparison"
elif ! command -v "$LIBCOAP_BIN" >/dev/null; then
	libcoap= skipped="$LIBCOAP_BIN not found (Debian package libcoap3-bin): skipping the libcoap comparison"
fi
[ -z "$skipped" ] || log "$skipped"
[ -z "$(ss -Hlun "sport = :$COAP_PORT")" ] || die "UDP port $COAP_PORT is in use; set COAP_PORT"
[ -z "$(ss -Hltn "sport = :$HTTP_PORT")" ] || die "TCP port $HTTP_PORT is in use; set HTTP_PORT"
if [ -n "$libcoap" ]; then
	# coap-server-notls listens on UDP and TCP on its port.
	[ -z "$(ss -Hlun "sport = :$LIBCOAP_PORT")$(ss -Hltn "sport = :$LIBCOAP_PORT")" ] ||
		die "port $LIBCOAP_PORT is in use; set LIBCOAP_PORT"
	[ "$LIBCOAP_PORT" != "$COAP_PORT" ] && [ "$LIBCOAP_PORT" != "$HTTP_PORT" ] ||
		die "LIBCOAP_PORT must differ from COAP_PORT and HTTP_PORT"
fi

# One socket per virtual device, plus the gateway's files.
want_nofile=$((DEVICES + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_nofile" ]; then
	ulimit -n "$want_nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)" ||
		die "cannot raise the open-file limit to $want_nofile (hard limit $(ulimit -Hn))"
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
	show go build -o "$BIN" ./cmd/coapgw
	go build -o "$BIN" ./cmd/coapgw
	show go build -o "$BENCH_BIN" ./cmd/coapgw-bench
	go build -o "$BENCH_BIN" ./cmd/coapgw-bench
fi
[ -x "$BIN" ] || die "$BIN missing"
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing"

OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/coapgw-bench.XXXXXX)}
mkdir -p "$OUT_DIR"
DATA_DIR=$(mktemp -d /tmp/coapgw-bench-data.XXXXXX)
GW_PID=
LC_PID=

restore_bufs() {
	if [ -n "${old_rmem:-}" ]; then
		echo "$old_rmem" >/proc/sys/net/core/rmem_default
		echo "$old_wmem" >/proc/sys/net/core/wmem_default
		old_rmem=
	fi
}

cleanup() {
	restore_bufs
	for pid in "$GW_PID" "$LC_PID"; do
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
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
	if [ -n "$libcoap" ]; then
		# coap-server-notls has no version flag; its usage text (after an error) names it.
		lcver=$("$LIBCOAP_BIN" -h 2>&1 | grep -m1 -o 'v[0-9][0-9.]*' || true)
		echo "libcoap:   ${lcver:-unknown} ($(command -v "$LIBCOAP_BIN"); the kernel's default UDP receive buffer: $(cat /proc/sys/net/core/rmem_default) bytes)"
	fi
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
bench() { # bench NAME PID PORT [extra flags]: one load generator run against the server PID on PORT
	local name=$1 pid=$2 port=$3
	shift 3
	local cmd=(env GOMAXPROCS=1 taskset -c "$LG_CPU" "$BENCH_BIN"
		--target "127.0.0.1:$port" --devices "$DEVICES" --inflight "$INFLIGHT"
		--payload-size "$PAYLOAD_SIZE" --duration "$DURATION" --warmup "$WARMUP"
		--gateway-pid "$pid" --gateway-port "$port" "$@")
	# shellcheck disable=SC2206
	cmd+=($BENCH_ARGS)
	log "$name run"
	show "${cmd[@]}"
	"${cmd[@]}" | tee "$OUT_DIR/$name.txt" || status=1
	kill -0 "$pid" 2>/dev/null || die "the server died during the $name run"
}

stop() { # stop NAME PID: SIGTERM, wait up to 30 s, report how it exited
	local name=$1 pid=$2 t0 st=
	log "stop $name (SIGTERM)"
	show kill -TERM "$pid"
	t0=$(date +%s.%N)
	kill -TERM "$pid"
	for _ in $(seq 300); do
		if ! kill -0 "$pid" 2>/dev/null; then
			st=0
			wait "$pid" || st=$?
			break
		fi
		sleep 0.1
	done
	if [ -z "$st" ]; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		echo "$name: did not exit within 30 s of SIGTERM; killed" | tee -a "$OUT_DIR/summary.txt"
		status=1
	else
		printf '%s: exited with status %s %s s after SIGTERM\n' "$name" "$st" \
			"$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" | tee -a "$OUT_DIR/summary.txt"
		[ "$st" = 0 ] || status=1
	fi
}

bench con "$GW_PID" "$COAP_PORT"
if [ "${SKIP_NON:-}" != 1 ]; then
	# Peak RSS (VmHWM) is since the gateway started, so it covers the CON run too.
	bench non "$GW_PID" "$COAP_PORT" --non
fi
stop gateway "$GW_PID"
GW_PID=
echo "spool after the runs: $(du -sh "$DATA_DIR" | cut -f1)" | tee -a "$OUT_DIR/summary.txt"

if [ -n "$libcoap" ]; then
	# The same core as the gateway had, the same load; libcoap's example server answers
	# PUT /example_data with 2.04 (and keeps the last value in memory).
	lc_cmd=(taskset -c "$GW_CPU" "$LIBCOAP_BIN" -A 127.0.0.1 -p "$LIBCOAP_PORT" -v 0)
	# shellcheck disable=SC2206
	lc_cmd+=($LIBCOAP_ARGS)
	log "start libcoap's example server"
	# libcoap's example server keeps the kernel's default socket buffers, the gateway asks for
	# 8 MiB (--socket-buffer): give libcoap's socket the same by raising the defaults while it
	# binds (root only), so that neither server loses datagrams the other would have kept.
	lc_buf=$((8 << 20)) old_rmem= old_wmem=
	if [ -w /proc/sys/net/core/rmem_default ] && [ -w /proc/sys/net/core/wmem_default ]; then
		old_rmem=$(cat /proc/sys/net/core/rmem_default) old_wmem=$(cat /proc/sys/net/core/wmem_default)
		echo "$lc_buf" >/proc/sys/net/core/rmem_default
		echo "$lc_buf" >/proc/sys/net/core/wmem_default
		echo "libcoap socket buffers: $lc_buf bytes (kernel defaults raised while it binds)" | tee -a "$OUT_DIR/machine.txt"
	else
		echo "libcoap socket buffers: the kernel's defaults (not root: cannot raise them to $lc_buf)" | tee -a "$OUT_DIR/machine.txt"
	fi
	show "${lc_cmd[@]}"
	"${lc_cmd[@]}" >"$OUT_DIR/libcoap.log" 2>&1 &
	LC_PID=$!
	ready=
	for _ in $(seq 100); do
		kill -0 "$LC_PID" 2>/dev/null || { tail -20 "$OUT_DIR/libcoap.log" >&2; die "coap-server-notls exited during start-up"; }
		if [ -n "$(ss -Hlun "sport = :$LIBCOAP_PORT")" ]; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ready" ] || die "coap-server-notls not listening on UDP port $LIBCOAP_PORT after 10 s"
	restore_bufs
	log "libcoap pid $LC_PID listening"
	bench libcoap-con "$LC_PID" "$LIBCOAP_PORT" --method put --path /example_data
	if [ "${SKIP_NON:-}" != 1 ]; then
		bench libcoap-non "$LC_PID" "$LIBCOAP_PORT" --method put --path /example_data --non
	fi
	stop libcoap "$LC_PID"
	LC_PID=
fi

# Side by side: delivered/s, the server's CPU µs per delivered message and share of its core,
# from the reports above.
field() { # field FILE: delivered/s, server CPU µs per delivered message, its core share, codes
	awk 'function dflt(v) { return v == "" ? "-" : v }
		$1 == "delivered/s" { d = $2 }
		/^  gateway pid / { for (i = 1; i <= NF; i++) { if ($i == "µs") u = $(i - 1); if ($i ~ /^\([0-9.]+%$/) c = substr($i, 2) } }
		/codes: / { sub(/.*codes: /, ""); k = $0 }
		END { printf "%s %s %s %s\n", dflt(d), dflt(u), dflt(c), dflt(k) }' "$1"
}
if [ -n "$libcoap" ]; then
	{
		echo
		echo "side by side: the same load (--devices $DEVICES --inflight $INFLIGHT --payload-size $PAYLOAD_SIZE --warmup $WARMUP --duration $DURATION), each server alone on core $GW_CPU, the load generator on core $LG_CPU"
		printf '%-10s %-28s %12s %14s %8s  %s\n' mode server delivered/s "CPU µs/msg" core codes
		modes=con
		[ "${SKIP_NON:-}" = 1 ] || modes="con non"
		for m in $modes; do
			read -r gd gu gc gk <<<"$(field "$OUT_DIR/$m.txt")"
			read -r ld lu lc lk <<<"$(field "$OUT_DIR/libcoap-$m.txt")"
			M=$(echo "$m" | tr a-z A-Z)
			printf '%-10s %-28s %12s %14s %8s  %s\n' "$M" "coapgw POST /bench/dev-<n>" "$gd" "$gu" "$gc" "$gk"
			printf '%-10s %-28s %12s %14s %8s  %s\n' "$M" "libcoap PUT /example_data" "$ld" "$lu" "$lc" "$lk"
			awk -v m="$M" -v gd="$gd" -v ld="$ld" -v gu="$gu" -v lu="$lu" 'BEGIN {
				r = (gd > 0 && ld > 0) ? sprintf("%.2f× delivered/s", gd / ld) : "no delivered/s ratio (a run delivered nothing)"
				if (gu > 0 && lu > 0) r = r sprintf(", %.2f× CPU µs per message", gu / lu)
				printf "%-10s coapgw/libcoap: %s\n", m, r }'
			case " $lk " in
			*" 2.04="*) [ "${lk#* }" = "$lk" ] || echo "warning: libcoap $M answered other codes besides 2.04: $lk" ;;
			*) echo "warning: libcoap $M did not answer 2.04: $lk" ;;
			esac
		done
	} | tee -a "$OUT_DIR/summary.txt"
	# A comparison where libcoap did not acknowledge the PUTs means nothing: fail the run.
	if grep -q '^warning: libcoap .* did not answer 2.04' "$OUT_DIR/summary.txt"; then status=1; fi
fi

[ -z "$skipped" ] || echo "$skipped" | tee -a "$OUT_DIR/summary.txt"
log "results in $OUT_DIR (machine.txt, con.txt, non.txt, gateway.log${libcoap:+, libcoap-con.txt, libcoap-non.txt, libcoap.log}, summary.txt)"
exit $status
