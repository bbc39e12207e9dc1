#!/usr/bin/env bash
# deploy-checks.sh — static checks of the deployment artefacts under deploy/.
#
#   1. tofu fmt -check -recursive deploy/terraform   (OpenTofu built from its Go module, cached)
#   2. checkov -d deploy/terraform                   (pinned, in a cached virtualenv; zero failures)
#   2b. tofu init + validate of examples/basic       (only if a local provider mirror exists:
#                                                     the registry is not reachable from CI)
#   2c. tofu test of modules/coapgw                  (plans against a mocked provider; also
#                                                     needs the mirror for init; part of
#                                                     validate unless test is listed itself)
#   3. go test ./internal/deploycheck/...            (hcl/v2 policy assertions on the Terraform)
#
# Each step installs what it needs on first use and reuses it afterwards. Run from anywhere.
# Environment:
#   COAPGW_TOOLS_DIR   cache for the tools (default: ~/.cache/coapgw)
#   OPENTOFU_VERSION   OpenTofu module version to build (default below)
#   CHECKOV_VERSION    checkov version from PyPI (default below)
#   TF_PLUGIN_MIRROR   filesystem mirror with registry.terraform.io/hashicorp/aws/<v>/<os_arch>
#                      (default /opt/tf-plugins); without one, validate is skipped, not failed
#   DEPLOY_CHECKS      space-separated subset of: fmt validate test checkov gotest (default: all)
set -euo pipefail

OPENTOFU_VERSION="${OPENTOFU_VERSION:-v1.10.10}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
TOOLS="${COAPGW_TOOLS_DIR:-${HOME}/.cache/coapgw}"
DEPLOY_CHECKS="${DEPLOY_CHECKS:-fmt validate test checkov gotest}"
TF_PLUGIN_MIRROR="${TF_PLUGIN_MIRROR:-/opt/tf-plugins}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p "$TOOLS"

log() { printf '== %s\n' "$*" >&2; }

# install_tofu prints the path of a cached tofu binary, building it from the Go module on first use.
install_tofu() {
	local bin="$TOOLS/tofu-${OPENTOFU_VERSION}"
	if [[ ! -x "$bin" ]]; then
		log "building OpenTofu ${OPENTOFU_VERSION} from its Go module (once; cached at $bin)"
		local dir
		dir="$(cd "$TOOLS" && GOFLAGS=-mod=mod go mod download -json "github.com/opentofu/opentofu@${OPENTOFU_VERSION}" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		[[ -d "$dir" ]] || { echo "deploy-checks: go mod download gave no directory for opentofu" >&2; return 1; }
		(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off go build -trimpath -o "$bin.tmp" ./cmd/tofu)
		mv "$bin.tmp" "$bin"
	fi
	printf '%s\n' "$bin"
}

# install_checkov prints the path of a cached checkov, installed with pip into its own virtualenv.
install_checkov() {
	local venv="$TOOLS/checkov-${CHECKOV_VERSION}"
	if [[ ! -x "$venv/bin/checkov" ]]; then
		log "installing checkov ${CHECKOV_VERSION} into $venv (once)"
		rm -rf "$venv"
		python3 -m venv "$venv"
		"$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}"
	fi
	printf '%s\n' "$venv/bin/checkov"
}

# tofu_workdir prints a temporary directory holding a copy of deploy/ and a CLI configuration
# ($dir/tofurc) that installs the AWS provider from the local mirror.
tofu_workdir() {
	local work
	work="$(mktemp -d)"
	# The mirror is laid out for registry.terraform.io; OpenTofu resolves hashicorp/aws at
	# registry.opentofu.org, so give it a view with that host name.
	mkdir -p "$work/deploy"
	for platform in "$TF_PLUGIN_MIRROR"/registry.terraform.io/hashicorp/aws/*/*; do
		version="$(basename "$(dirname "$platform")")"
		mkdir -p "$work/mirror/registry.opentofu.org/hashicorp/aws/$version"
		ln -s "$platform" "$work/mirror/registry.opentofu.org/hashicorp/aws/$version/"
	done
	printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$work/mirror" >"$work/tofurc"
	cp -r deploy/terraform deploy/systemd "$work/deploy/"
	rm -rf "$work"/deploy/terraform/examples/*/.terraform "$work"/deploy/terraform/modules/*/.terraform
	printf '%s\n' "$work"
}

# tofu_test plans the module against a mocked provider (tests/*.tftest.hcl): both exposure
# modes, with and without plain CoAP; placeholder zips stand in for `make lambda-zip`.
tofu_test() {
	local tofu work
	tofu="$(install_tofu)"
	log "tofu test (deploy/terraform/modules/coapgw, mocked provider)"
	work="$(tofu_workdir)"
	mkdir -p "$work/bin/lambda"
	: >"$work/bin/lambda/coapgw-lambda.zip"
	: >"$work/bin/lambda/coapgw-canary.zip"
	if ! (cd "$work/deploy/terraform/modules/coapgw" &&
		TF_CLI_CONFIG_FILE="$work/tofurc" "$tofu" init -backend=false -input=false -no-color >"$work/init.log" 2>&1 ||
		{ cat "$work/init.log" >&2; exit 1; }
		TF_CLI_CONFIG_FILE="$work/tofurc" "$tofu" test -no-color); then
		failed=1
	fi
	rm -rf "$work"
}

failed=0
for check in $DEPLOY_CHECKS; do
	case "$check" in
	fmt)
		tofu="$(install_tofu)"
		log "tofu fmt -check -recursive deploy/terraform"
		# fmt needs no CLI configuration; do not warn about a configured file that does not exist.
		if ! TF_CLI_CONFIG_FILE=/dev/null TOFU_CLI_CONFIG_FILE=/dev/null "$tofu" fmt -check -diff -recursive deploy/terraform; then
			echo "deploy-checks: terraform not formatted; run: $tofu fmt -recursive deploy/terraform" >&2
			failed=1
		fi
		;;
	validate)
		if [[ ! -d "$TF_PLUGIN_MIRROR/registry.terraform.io/hashicorp/aws" ]]; then
			log "tofu validate: skipped (no provider mirror at $TF_PLUGIN_MIRROR)"
			continue
		fi
		tofu="$(install_tofu)"
		log "tofu init -backend=false && tofu validate (deploy/terraform/examples/basic)"
		work="$(tofu_workdir)"
		if ! (cd "$work/deploy/terraform/examples/basic" &&
			TF_CLI_CONFIG_FILE="$work/tofurc" "$tofu" init -backend=false -input=false -no-color >"$work/init.log" 2>&1 ||
			{ cat "$work/init.log" >&2; exit 1; }
			TF_CLI_CONFIG_FILE="$work/tofurc" "$tofu" validate -no-color); then
			failed=1
		fi
		rm -rf "$work"
		# validate has always included tofu test; run it here unless it is its own step.
		if [[ " $DEPLOY_CHECKS " != *" test "* ]]; then
			tofu_test
		fi
		;;
	test)
		if [[ ! -d "$TF_PLUGIN_MIRROR/registry.terraform.io/hashicorp/aws" ]]; then
			log "tofu test: skipped (no provider mirror at $TF_PLUGIN_MIRROR)"
			continue
		fi
		tofu_test
		;;
	checkov)
		checkov="$(install_checkov)"
		log "checkov -d deploy/terraform"
		# --framework terraform: the HCL only (the Dockerfile has its own hardening, reviewed by hand).
		if ! "$checkov" -d deploy/terraform --framework terraform --quiet --compact --skip-download \
			--download-external-modules false; then
			failed=1
		fi
		;;
	gotest)
		log "go test ./internal/deploycheck/..."
		go test -count=1 ./internal/deploycheck/... || failed=1
		;;
	*)
		echo "deploy-checks: unknown check $check" >&2
		exit 2
		;;
	esac
done
if [[ $failed != 0 ]]; then
	echo "deploy-checks: FAILED" >&2
	exit 1
fi
log "deploy-checks: all passed"
