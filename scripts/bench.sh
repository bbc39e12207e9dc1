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
# the gateway, with PUT /example_data (which it answers 2.04) instead of POST /bench/bench-<n>; then
# both servers' delivered/s and CPU µs per message are printed side by side with the ratio
# coapgw/libcoap. Skipped when coap-server-notls is not installed or SKIP_LIBCOAP=1.
#
# Then the DTLS section (skipped with SKIP_DTLS=1): coapgw-bench --dtls, where every one of
# DTLS_DEVICES virtual devices performs a real DTLS 1.2 PSK handshake (at most HS_CONCURRENCY at
# once) and then sends the same load over its session, runs against libcoap's OpenSSL example
# server, coap-server-openssl -k LIBCOAP_PSK (one key for every identity; it serves CoAPS on
# LIBCOAP_DTLS_PORT+1), pinned to the same core, and — when bin/coapgw has --coaps-addr —
# against a fresh gateway with --coaps-addr 127.0.0.1:COAPS_PORT, a random fleet master key
# (--fleet-key-file; each device's key is derived from it) and --plain-coap open. Printed for both:
# handshakes/s, the server's CPU µs per handshake, delivered/s over the sessions, CPU µs per
# message, RSS and bytes per session, the ratios coapgw/libcoap, and coapgw's DTLS figures next to
# its plain CON run. The load generator's devices do their handshakes with pion and then run
# their sessions from its epoll loop in the record layer the gateway uses too (package
# dtlsrecord); with two cores shared by both sides, compare CPU per handshake and per message
# rather than rates.
#
# Every command is printed before it runs, so each figure can be quoted with the command that
# produced it.
#
# Settings (environment): DURATION (20s), WARMUP (1s), DEVICES (256), INFLIGHT (2),
# PAYLOAD_SIZE (64), COAP_PORT (25683), HTTP_PORT (28080), LIBCOAP_PORT (25684), GW_CPU (0),
# LG_CPU (1), GW_ARGS (flags for serve, default --process none), BENCH_ARGS (extra flags for
# coapgw-bench, both servers), LIBCOAP_ARGS (extra flags for coap-server-notls), OUT_DIR (results;
# default a new directory under /tmp), SKIP_BUILD=1 (use the existing bin/coapgw and
# bin/coapgw-bench), SKIP_NON=1, SKIP_LIBCOAP=1; for DTLS: DTLS_DEVICES (2000), HS_CONCURRENCY
# (64), DTLS_CIPHER (ccm8, or gcm), COAPS_PORT (25686), LIBCOAP_DTLS_PORT (25688; CoAPS on the next
# port), LIBCOAP_PSK (coapgw-bench-psk), SKIP_DTLS=1.
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
DTLS_DEVICES=${DTLS_DEVICES:-2000}
HS_CONCURRENCY=${HS_CONCURRENCY:-64}
DTLS_CIPHER=${DTLS_CIPHER:-ccm8}
COAPS_PORT=${COAPS_PORT:-25686}
LIBCOAP_DTLS_PORT=${LIBCOAP_DTLS_PORT:-25688}
LIBCOAP_PSK=${LIBCOAP_PSK:-coapgw-bench-psk}
BIN=bin/coapgw
BENCH_BIN=bin/coapgw-bench
LIBCOAP_BIN=coap-server-notls
LIBCOAP_DTLS_BIN=coap-server-openssl

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
dtls=1 dtls_skipped=
if [ "${SKIP_DTLS:-}" = 1 ]; then
	dtls= dtls_skipped="SKIP_DTLS=1: no DTLS runs"
elif ! command -v "$LIBCOAP_DTLS_BIN" >/dev/null; then
	dtls_skipped="$LIBCOAP_DTLS_BIN not found (Debian package libcoap3-bin): no libcoap DTLS comparison"
fi
[ -z "$dtls_skipped" ] || log "$dtls_skipped"
if [ -n "$dtls" ]; then
	for p in "$LIBCOAP_DTLS_PORT" "$((LIBCOAP_DTLS_PORT + 1))"; do
		[ -z "$(ss -Hlun "sport = :$p")$(ss -Hltn "sport = :$p")" ] || die "port $p is in use; set LIBCOAP_DTLS_PORT"
	done
	[ -z "$(ss -Hlun "sport = :$COAPS_PORT")" ] || die "UDP port $COAPS_PORT is in use; set COAPS_PORT"
fi
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
[ -z "$dtls" ] || [ "$DTLS_DEVICES" -le "$DEVICES" ] || want_nofile=$((DTLS_DEVICES + 1024))
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
DTLS_DIR=
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
	[ -z "$DTLS_DIR" ] || rm -rf "$DTLS_DIR"
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

start_gateway() { # start_gateway LOG DATA_DIR [extra flags]: start the gateway, wait for /readyz
	local logf=$1 dir=$2 ready=
	shift 2
	local gw_cmd=(env GOMAXPROCS=1 taskset -c "$GW_CPU" "$BIN" serve
		--coap-addr "127.0.0.1:$COAP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --data-dir "$dir")
	# shellcheck disable=SC2206
	gw_cmd+=($GW_ARGS "$@")
	log "start the gateway"
	show "${gw_cmd[@]}"
	"${gw_cmd[@]}" >"$logf" 2>&1 &
	GW_PID=$!
	for _ in $(seq 300); do
		kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "gateway exited during start-up"; }
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz" || true)" = 200 ]; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ready" ] || { tail -20 "$logf" >&2; die "gateway not ready after 30 s"; }
	log "gateway pid $GW_PID ready"
}
start_gateway "$OUT_DIR/gateway.log" "$DATA_DIR"

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

# libcoap's example servers keep the kernel's default socket buffers, the gateway asks for 8 MiB
# (--socket-buffer): give libcoap's socket the same by raising the defaults while it binds (root
# only; restore_bufs puts them back), so that neither server loses datagrams the other would have
# kept.
raise_bufs() {
	lc_buf=$((8 << 20)) old_rmem= old_wmem=
	if [ -w /proc/sys/net/core/rmem_default ] && [ -w /proc/sys/net/core/wmem_default ]; then
		old_rmem=$(cat /proc/sys/net/core/rmem_default) old_wmem=$(cat /proc/sys/net/core/wmem_default)
		echo "$lc_buf" >/proc/sys/net/core/rmem_default
		echo "$lc_buf" >/proc/sys/net/core/wmem_default
		echo "libcoap socket buffers: $lc_buf bytes (kernel defaults raised while it binds)" | tee -a "$OUT_DIR/machine.txt"
	else
		echo "libcoap socket buffers: the kernel's defaults (not root: cannot raise them to $lc_buf)" | tee -a "$OUT_DIR/machine.txt"
	fi
}

# wait_udp NAME PID PORT LOG: wait until PID listens on UDP PORT.
wait_udp() {
	local name=$1 pid=$2 port=$3 logf=$4
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited during start-up"; }
		[ -z "$(ss -Hlun "sport = :$port")" ] || return 0
		sleep 0.1
	done
	die "$name not listening on UDP port $port after 10 s"
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
	raise_bufs
	show "${lc_cmd[@]}"
	"${lc_cmd[@]}" >"$OUT_DIR/libcoap.log" 2>&1 &
	LC_PID=$!
	wait_udp "$LIBCOAP_BIN" "$LC_PID" "$LIBCOAP_PORT" "$OUT_DIR/libcoap.log"
	restore_bufs
	log "libcoap pid $LC_PID listening"
	bench libcoap-con "$LC_PID" "$LIBCOAP_PORT" --method put --path /example_data
	if [ "${SKIP_NON:-}" != 1 ]; then
		bench libcoap-non "$LC_PID" "$LIBCOAP_PORT" --method put --path /example_data --non
	fi
	stop libcoap "$LC_PID"
	LC_PID=
fi

# DTLS: libcoap's OpenSSL example server with one PSK, then the gateway with a fleet key.
dtls_bench() { # dtls_bench NAME PID PORT [extra flags]
	local name=$1 pid=$2 port=$3
	shift 3
	bench "$name" "$pid" "$port" --dtls --devices "$DTLS_DEVICES" --dtls-cipher "$DTLS_CIPHER" \
		--handshake-concurrency "$HS_CONCURRENCY" "$@"
}
# The help text is read whole first: grep -q could stop reading early and, under pipefail,
# the writer's SIGPIPE would read as "no DTLS".
gw_dtls= gw_help=$("$BIN" --help 2>&1 || true)
if [ -n "$dtls" ] && [[ $gw_help == *coaps-addr* ]]; then
	gw_dtls=1
elif [ -n "$dtls" ]; then
	echo "$BIN has no --coaps-addr: no gateway DTLS run" | tee -a "$OUT_DIR/summary.txt"
fi
if [ -n "$dtls" ] && [ -z "$dtls_skipped" ]; then
	# The key is text on libcoap's command line; the load generator sends the same bytes.
	lc_cmd=(taskset -c "$GW_CPU" "$LIBCOAP_DTLS_BIN" -A 127.0.0.1 -p "$LIBCOAP_DTLS_PORT" -v 0 -k "$LIBCOAP_PSK")
	log "start libcoap's OpenSSL example server (CoAPS on port $((LIBCOAP_DTLS_PORT + 1)))"
	raise_bufs
	show "${lc_cmd[@]}"
	"${lc_cmd[@]}" >"$OUT_DIR/libcoap-dtls.log" 2>&1 &
	LC_PID=$!
	wait_udp "$LIBCOAP_DTLS_BIN" "$LC_PID" "$((LIBCOAP_DTLS_PORT + 1))" "$OUT_DIR/libcoap-dtls.log"
	restore_bufs
	log "libcoap DTLS pid $LC_PID listening"
	dtls_bench libcoap-dtls "$LC_PID" "$((LIBCOAP_DTLS_PORT + 1))" --psk "$LIBCOAP_PSK" --method put --path /example_data
	stop libcoap-dtls "$LC_PID"
	LC_PID=
fi
if [ -n "$gw_dtls" ]; then
	DTLS_DIR=$(mktemp -d /tmp/coapgw-bench-dtls.XXXXXX)
	fleet_key=$(od -An -tx1 -v -N32 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$fleet_key" >"$DTLS_DIR/fleet.key"
	chmod 600 "$DTLS_DIR/fleet.key"
	mkdir "$DTLS_DIR/data"
	start_gateway "$OUT_DIR/gateway-dtls.log" "$DTLS_DIR/data" \
		--coaps-addr "127.0.0.1:$COAPS_PORT" --fleet-key-file "$DTLS_DIR/fleet.key" --plain-coap open
	wait_udp gateway "$GW_PID" "$COAPS_PORT" "$OUT_DIR/gateway-dtls.log"
	dtls_bench dtls "$GW_PID" "$COAPS_PORT" --fleet-key-hex "$fleet_key"
	stop gateway-dtls "$GW_PID"
	GW_PID=
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
			printf '%-10s %-28s %12s %14s %8s  %s\n' "$M" "coapgw POST /bench/bench-<n>" "$gd" "$gu" "$gc" "$gk"
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

# DTLS side by side: handshakes/s, the server's CPU µs per handshake, delivered/s over the
# sessions, CPU µs per message, peak RSS and RSS per session, next to the plain CON run.
dtls_field() { # dtls_field FILE: hs/s, CPU µs/hs, failed hs, delivered/s, CPU µs/msg, peak RSS MiB, bytes/session
	[ -f "$1" ] || { echo "- - - - - - -"; return; }
	awk 'function dflt(v) { return v == "" ? "-" : v }
		$1 == "handshakes/s" { h = $2; f = $5 }
		/^  gateway hs / { for (i = 1; i <= NF; i++) if ($i == "µs") hu = $(i - 1) }
		/ bytes per session$/ { for (i = 1; i <= NF; i++) if ($i == "bytes") b = $(i - 1) }
		$1 == "delivered/s" { d = $2 }
		/^  gateway pid / { for (i = 1; i <= NF; i++) if ($i == "µs") u = $(i - 1) }
		/peak RSS \(VmHWM\)/ { for (i = 1; i <= NF; i++) if ($i == "MiB,") { r = $(i - 1); break } }
		END { printf "%s %s %s %s %s %s %s\n", dflt(h), dflt(hu), dflt(f), dflt(d), dflt(u), dflt(r), dflt(b) }' "$1"
}
ratio() { # ratio A B LABEL: "A/B× LABEL" when both are positive numbers
	awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f× %s", a / b, l; else printf "no %s ratio", l }'
}
if [ -n "$dtls" ] && { [ -f "$OUT_DIR/dtls.txt" ] || [ -f "$OUT_DIR/libcoap-dtls.txt" ]; }; then
	{
		echo
		echo "DTLS side by side: --dtls --devices $DTLS_DEVICES --dtls-cipher $DTLS_CIPHER --handshake-concurrency $HS_CONCURRENCY, otherwise the same load; each server alone on core $GW_CPU"
		fmt='%-26s %12s %10s %8s %12s %11s %9s %14s\n'
		# shellcheck disable=SC2059
		printf "$fmt" server handshakes/s "CPU µs/hs" "hs fail" delivered/s "CPU µs/msg" "peak MiB" bytes/session
		read -r _ _ _ pd pu pr _ <<<"$(dtls_field "$OUT_DIR/con.txt")"
		read -r gh ghu gf gd gu gr gb <<<"$(dtls_field "$OUT_DIR/dtls.txt")"
		read -r lh lhu lf ld lu lr lb <<<"$(dtls_field "$OUT_DIR/libcoap-dtls.txt")"
		# shellcheck disable=SC2059
		printf "$fmt" "coapgw plain CON" - - - "$pd" "$pu" "$pr" -
		# shellcheck disable=SC2059
		[ ! -f "$OUT_DIR/dtls.txt" ] || printf "$fmt" "coapgw DTLS (fleet key)" "$gh" "$ghu" "$gf" "$gd" "$gu" "$gr" "$gb"
		# shellcheck disable=SC2059
		[ ! -f "$OUT_DIR/libcoap-dtls.txt" ] || printf "$fmt" "libcoap DTLS (-k PSK)" "$lh" "$lhu" "$lf" "$ld" "$lu" "$lr" "$lb"
		if [ -f "$OUT_DIR/dtls.txt" ] && [ -f "$OUT_DIR/libcoap-dtls.txt" ]; then
			echo "DTLS coapgw/libcoap: $(ratio "$gh" "$lh" handshakes/s), $(ratio "$ghu" "$lhu" "CPU µs per handshake"), $(ratio "$gd" "$ld" delivered/s), $(ratio "$gu" "$lu" "CPU µs per message")"
		fi
		if [ -f "$OUT_DIR/dtls.txt" ]; then
			echo "coapgw DTLS/plain CON: $(ratio "$gd" "$pd" delivered/s), $(ratio "$gu" "$pu" "CPU µs per message")"
		fi
		for f in "$gf" "$lf"; do
			case $f in -|0) ;; *) echo "warning: a DTLS run had $f failed handshakes" ;; esac
		done
	} | tee -a "$OUT_DIR/summary.txt"
	if grep -q '^warning: a DTLS run had' "$OUT_DIR/summary.txt"; then status=1; fi
fi

[ -z "$skipped" ] || echo "$skipped" | tee -a "$OUT_DIR/summary.txt"
[ -z "$dtls_skipped" ] || echo "$dtls_skipped" | tee -a "$OUT_DIR/summary.txt"
log "results in $OUT_DIR (machine.txt, con.txt, non.txt, gateway.log${libcoap:+, libcoap-con.txt, libcoap-non.txt, libcoap.log}${dtls:+, libcoap-dtls.txt, dtls.txt (when the gateway has DTLS)}, summary.txt)"
exit $status
