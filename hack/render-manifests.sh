#!/usr/bin/env bash
# Renders everything derived from the one source of the CRDs and the chart:
#   crds/*.yaml         -> charts/credbridge/crds/*.yaml  (exact copies)
#   charts/credbridge   -> deploy/install.yaml             (Namespace + helm template --include-crds)
#                       -> deploy/kustomization.yaml       (kustomize base over install.yaml)
# helm is the one hack/controlplane/build.sh builds, so every developer renders identical output.
#
# Usage: hack/render-manifests.sh [--check]
#   --check  render into a temporary directory and exit 1, with a diff summary, when the files in the
#            repository differ. The webhook certificate, key and caBundle change on every render and
#            are ignored in the comparison.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
namespace=credbridge-system
release=credbridge
chart_dir=$root/charts/credbridge

check=false
case ${1:-} in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

helm=$("$root/hack/controlplane/build.sh" --print-dirs | sed -n 3p)/helm
if [[ ! -x $helm ]]; then
  echo "render-manifests.sh: helm not found at $helm; run \`make controlplane\` (hack/controlplane/build.sh) first" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Stage the chart with fresh CRD copies, so --check renders exactly what a write would produce.
cp -R "$chart_dir" "$work/chart"
rm -rf "$work/chart/crds"
mkdir -p "$work/chart/crds" "$work/deploy"
cp "$root"/crds/*.yaml "$work/chart/crds/"

{
  cat <<EOF
# credbridge install manifest, rendered from charts/credbridge by hack/render-manifests.sh.
# Do not edit: change the chart or crds/ and run the script again.
#
#   kubectl apply --server-side -f deploy/install.yaml      # or: kubectl apply -k deploy/
#
# The admission webhook's CA, serving certificate and private key below were generated when this file
# was rendered (helm template cannot keep a certificate between renders), so every copy of this file
# shares them. For production prefer the Helm chart, which generates them at install time and keeps
# them across upgrades, or cert-manager (--set webhook.certManager.enabled=true).
# The certificate names the Service in namespace $namespace: to install elsewhere, render the chart.
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/name: credbridge
    app.kubernetes.io/part-of: credbridge
    pod-security.kubernetes.io/enforce: restricted
EOF
  "$helm" template "$release" "$work/chart" --namespace "$namespace" --include-crds
} >"$work/deploy/install.yaml"

cat >"$work/deploy/kustomization.yaml" <<EOF
# kustomize base for credbridge, rendered by hack/render-manifests.sh; do not edit.
# Overlays can patch it (resources, nodeSelector, envFrom of the Deployment "credbridge").
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $namespace
resources:
  - install.yaml
EOF

if ! $check; then
  rm -rf "$chart_dir/crds"
  cp -R "$work/chart/crds" "$chart_dir/crds"
  mkdir -p "$root/deploy"
  cp "$work/deploy/install.yaml" "$work/deploy/kustomization.yaml" "$root/deploy/"
  echo "rendered charts/credbridge/crds/, deploy/install.yaml, deploy/kustomization.yaml"
  exit 0
fi

# Blank out what differs on every render: the base64 certificate, key and CA bundle.
normalise() {
  sed -E 's/^([[:space:]]*(tls\.crt|tls\.key|ca\.crt|caBundle):).*$/\1 <generated>/' "$1"
}

stale=()
report() { # relative-path expected-file actual-file
  local rel=$1 expected=$2 actual=$3
  if [[ ! -f $actual ]]; then
    stale+=("$rel (missing)")
    return
  fi
  if [[ $rel == deploy/install.yaml ]]; then
    if ! diff -u --label "$rel (committed)" --label "$rel (rendered)" \
        <(normalise "$actual") <(normalise "$expected") >"$work/diff"; then
      stale+=("$rel")
      head -n 40 "$work/diff" >&2
    fi
  elif ! cmp -s "$expected" "$actual"; then
    stale+=("$rel")
    diff -u --label "$rel (committed)" --label "$rel (rendered)" "$actual" "$expected" | head -n 40 >&2 || true
  fi
}

for crd in "$work"/chart/crds/*.yaml; do
  report "charts/credbridge/crds/$(basename "$crd")" "$crd" "$chart_dir/crds/$(basename "$crd")"
done
for extra in "$chart_dir"/crds/*; do
  if [[ -e $extra && ! -e $work/chart/crds/$(basename "$extra") ]]; then
    stale+=("charts/credbridge/crds/$(basename "$extra") (not in crds/)")
  fi
done
report deploy/install.yaml "$work/deploy/install.yaml" "$root/deploy/install.yaml"
report deploy/kustomization.yaml "$work/deploy/kustomization.yaml" "$root/deploy/kustomization.yaml"

if ((${#stale[@]})); then
  echo "render-manifests.sh --check: out of date:" >&2
  printf '  %s\n' "${stale[@]}" >&2
  echo "run hack/render-manifests.sh and commit the result" >&2
  exit 1
fi
echo "charts/credbridge/crds/ and deploy/ are up to date"
