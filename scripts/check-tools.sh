#!/usr/bin/env bash
# Check that the Kubernetes tools `make dev` and `make e2e` drive are installed and recent enough:
#   scripts/check-tools.sh TOOL...   (kind, helm, skaffold)
# Minimum versions come from the environment (the Makefile sets and exports them):
#   HELM_VERSION      Helm 3.14 or later; Helm 4 works too (see docs/kubernetes.md, server-side apply)
#   SKAFFOLD_VERSION  the skaffold release that reads skaffold.yaml's apiVersion
#   KIND_VERSION      kind with `--config` cluster files and node images for Kubernetes >= 1.29
# Exit status 2 names the tool, the version found and the one needed.
set -euo pipefail

need() {  # need TOOL FOUND MINIMUM HINT
  local tool=$1 found=${2#v} minimum=${3#v} hint=$4
  if [[ -z "$found" ]]; then
    echo "$tool: cannot tell its version; $hint" >&2
    exit 2
  fi
  if [[ "$(printf '%s\n%s\n' "$minimum" "$found" | sort -V | head -n1)" != "$minimum" ]]; then
    echo "$tool $found is too old: $minimum or later is needed; $hint" >&2
    exit 2
  fi
}

for tool in "$@"; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is not installed: see docs/kubernetes.md (Tools)" >&2
    exit 2
  fi
  case "$tool" in
    helm)
      need helm "$(helm version --template '{{.Version}}' 2>/dev/null)" "${HELM_VERSION:?}" \
        "https://helm.sh/docs/intro/install/" ;;
    skaffold)
      need skaffold "$(skaffold version 2>/dev/null)" "${SKAFFOLD_VERSION:?}" \
        "https://skaffold.dev/docs/install/" ;;
    kind)
      need kind "$(kind version 2>/dev/null | awk '{print $2}')" "${KIND_VERSION:?}" \
        "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    *)
      echo "check-tools: unknown tool $tool" >&2
      exit 2 ;;
  esac
done
