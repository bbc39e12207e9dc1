#!/usr/bin/env bash
# The whole test suite: installs its test peers (idempotently), then runs static checks and every
# test with the race detector. Used by `make test` and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v coap-client-notls >/dev/null 2>&1 || need_apt+=(libcoap3-bin)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto) # the MQTT broker standing in for AWS IoT (downlink tests)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import moto.server" >/dev/null 2>&1; then
  echo "== installing moto (AWS API emulator for the SQS/IoT tests)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi

if ! python3 -c "import aiocoap" >/dev/null 2>&1; then
  echo "== installing aiocoap (CoAP client for the interop test)"
  python3 -m pip install --quiet --disable-pip-version-check 'aiocoap==0.4.17'
fi

if ! python3 -c "import cbor2" >/dev/null 2>&1; then
  echo "== installing cbor2 (CBOR encoder for the aiocoap formats test)"
  python3 -m pip install --quiet --disable-pip-version-check 'cbor2==6.2.1'
fi

# node-coap, the CoAP client of the 2018 CoAP-to-AWS-IoT ingestor's example device, for the
# --compat seed test (cmd/coapgw/seed_e2e_test.go reads COAPGW_NODE_COAP).
export COAPGW_NODE_COAP="${COAPGW_NODE_COAP:-${XDG_CACHE_HOME:-$HOME/.cache}/coapgw/node-coap-1.5.0}"
if [ ! -f "$COAPGW_NODE_COAP/node_modules/coap/package.json" ]; then
  echo "== installing node-coap (the 2018 example device's client) into $COAPGW_NODE_COAP"
  npm install --silent --no-audit --no-fund --prefix "$COAPGW_NODE_COAP" coap@1.5.0 >/dev/null
fi

GOBIN_DIR="$(go env GOPATH)/bin"
export PATH="$GOBIN_DIR:$PATH"
if ! command -v staticcheck >/dev/null 2>&1; then
  echo "== installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

# The C device example (examples/libcoap) compiles with gcc against libcoap's headers; promtool
# (Debian's prometheus package, without its recommended exporters) checks deploy/prometheus.
example_apt=()
command -v gcc >/dev/null 2>&1 || example_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || example_apt+=(pkg-config)
pkg-config --exists libcoap-3-notls 2>/dev/null || example_apt+=(libcoap3-dev)
command -v promtool >/dev/null 2>&1 || example_apt+=(prometheus)
if ((${#example_apt[@]})); then
  echo "== installing ${example_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${example_apt[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
# coapgw's own packages; third_party/pion-dtls (the carried, patched DTLS library) is tested on
# its own below, as its upstream tests it.
pkgs=$(go list ./... | grep -v '/third_party/')
echo "== go vet"
go vet $pkgs
echo "== staticcheck"
staticcheck $pkgs

echo "== deploy checks (tofu fmt, checkov; the Terraform policy test runs with go test below)"
DEPLOY_CHECKS="fmt validate checkov" scripts/deploy-checks.sh

# Browser tests keep their screenshots here.
export COAPGW_ARTIFACTS="${COAPGW_ARTIFACTS:-$PWD/artifacts}"
mkdir -p "$COAPGW_ARTIFACTS"
echo "== go test -race (screenshots in $COAPGW_ARTIFACTS)"
# COAPGW_REQUIRE_PEERS turns a missing peer (coap-client, aiocoap, chromium, moto, node-coap) into a failure instead of a skip.
COAPGW_REQUIRE_PEERS=1 go test -race -count=1 -timeout 20m $pkgs
echo "== go test third_party/pion-dtls (its upstream tests and the patch's)"
# TestGenerateKeypair_RandFailure injects a failing random source, which Go 1.26's crypto ignores
# for key generation in a go 1.26 module (GODEBUG cryptocustomrand): see third_party/pion-dtls/PATCH.md.
go test -count=1 -timeout 10m -skip '^TestGenerateKeypair_RandFailure$' ./third_party/...
