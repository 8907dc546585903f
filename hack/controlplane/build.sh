#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) and helm
# from the Go modules pinned beside this script, into
#   ${XDG_CACHE_HOME:-~/.cache}/credbridge/bin/<component>-<version>/
# Binaries already there are reused, so a second run is a no-op. The first build compiles a few
# thousand Go packages and takes a while on a small machine: progress is printed as it goes.
#
# Usage: hack/controlplane/build.sh [--print-dirs]
#   --print-dirs  print the three binary directories (kubernetes, etcd, helm) and exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/credbridge/bin

required_version() { # module-dir module-path
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $3 == "" { print $2 }' "$here/$1/go.mod" | head -n 1
}

kube_version=$(required_version kubernetes k8s.io/kubernetes)
etcd_version=$(required_version etcd go.etcd.io/etcd/server/v3)
helm_version=$(required_version helm helm.sh/helm/v3)
kube_dir=$cache_root/kubernetes-$kube_version
etcd_dir=$cache_root/etcd-$etcd_version
helm_dir=$cache_root/helm-$helm_version

if [[ ${1:-} == --print-dirs ]]; then
  printf '%s\n' "$kube_dir" "$etcd_dir" "$helm_dir"
  exit 0
fi

command -v go >/dev/null || {
  echo "build.sh: Go is not installed. Install Go >= 1.26, or point KUBECONFIG at an existing cluster" \
       "and set CREDBRIDGE_USE_EXISTING_CLUSTER=1." >&2
  exit 1
}

export GOFLAGS=-buildvcs=false
started=$SECONDS

# build MODULE_DIR PACKAGE OUTPUT LDFLAGS: compile one program, printing how many packages are done.
build() {
  local module=$1 package=$2 output=$3 ldflags=$4 name
  name=$(basename "$output")
  if [[ -x $output ]]; then
    echo "  $name: cached at $output"
    return
  fi
  mkdir -p "$(dirname "$output")"
  local total
  total=$(cd "$here/$module" && go list -deps "$package" | wc -l)
  echo "  $name: compiling (up to $total packages; the first build takes 5-10 minutes on 2 cores)"
  local tmp="$output.tmp.$$"
  (cd "$here/$module" && go build -v -trimpath -ldflags "$ldflags" -o "$tmp" "$package" 2>&1) |
    awk -v total="$total" -v name="$name" -v t0="$started" '
      { n++; if (n % 200 == 0) { printf "  %s: %d/%d packages compiled\n", name, n, total; fflush() } }
      /^#|\.go:[0-9]+:/ { print; fflush() }'
  if [[ ! -x $tmp ]]; then
    echo "build.sh: building $name failed (see the errors above)" >&2
    exit 1
  fi
  mv -f "$tmp" "$output"
  echo "  $name: done after $((SECONDS - started))s"
}

minor=${kube_version#v1.}
minor=${minor%%.*}
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"

echo "credbridge control plane: Kubernetes $kube_version, etcd $etcd_version, helm $helm_version -> $cache_root"
build etcd go.etcd.io/etcd/server/v3 "$etcd_dir/etcd" "-s -w"
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$kube_dir/kube-apiserver" "$kube_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$kube_dir/kube-controller-manager" "$kube_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kubectl "$kube_dir/kubectl" "$kube_ldflags"
build helm helm.sh/helm/v3/cmd/helm "$helm_dir/helm" "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
echo "credbridge control plane: ready after $((SECONDS - started))s"
