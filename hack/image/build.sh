#!/usr/bin/env bash
# Builds the operator image from the repository's Dockerfile, without a Docker daemon: with buildah
# (installed with apt-get when missing), or with docker where a daemon answers and buildah is absent.
#
# The image is tagged  $IMAGE_REPOSITORY:<version>-<inputs hash>  and  $IMAGE_REPOSITORY:<version>,
# where the hash covers the Dockerfile, .dockerignore, pyproject.toml, README.md, src/ and the base
# image's id: when an image with that tag exists, the build is skipped, so a second run is a no-op.
#
# The base (build argument BASE_IMAGE) is the public slim Python image. Where it is not present and
# cannot be pulled (no registry reachable), a Debian base is made locally with debootstrap
# (hack/image/debian-base.sh), imported as localhost/credbridge-base:<suite>-<hash of that script>,
# and its root filesystem kept in ${XDG_CACHE_HOME:-~/.cache}/credbridge/image/.
#
# Usage: hack/image/build.sh [--print-ref]
#   --print-ref  print the reference of the image built from the current sources and exit; exit 1
#                when it has not been built.
# Environment:
#   BASE_IMAGE        base image (default docker.io/library/python:3.11-slim)
#   IMAGE_BASE        auto (default): BASE_IMAGE when present or pullable, else the local Debian base;
#                     pull: BASE_IMAGE only; local: the local Debian base only
#   IMAGE_BUILDER     auto (default), buildah or docker
#   IMAGE_REPOSITORY  repository of the tags (default localhost/credbridge)
#   BUILDAH_ISOLATION buildah's isolation for RUN steps (default chroot: works without a container
#                     runtime and where runc/crun cannot set resource limits)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$repo/hack/image
cache=${XDG_CACHE_HOME:-$HOME/.cache}/credbridge/image
base_image=${BASE_IMAGE:-docker.io/library/python:3.11-slim}
base_mode=${IMAGE_BASE:-auto}
builder=${IMAGE_BUILDER:-auto}
repository=${IMAGE_REPOSITORY:-localhost/credbridge}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
started=$SECONDS

fail() {
  echo "image: $*" >&2
  exit 1
}

case $base_mode in auto | pull | local) ;; *) fail "IMAGE_BASE must be auto, pull or local, not '$base_mode'" ;; esac
case $builder in auto | buildah | docker) ;; *) fail "IMAGE_BUILDER must be auto, buildah or docker, not '$builder'" ;; esac

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

# install_packages PACKAGE...: apt-get install, non-interactive; fails with the fix when it cannot.
install_packages() {
  command -v apt-get >/dev/null ||
    fail "$* not installed, and this machine has no apt-get: install $* with its package manager, then run make image again"
  if [[ $EUID -ne 0 ]] && ! sudo -n true 2>/dev/null; then
    fail "$* not installed, and installing needs root: run 'sudo apt-get install -y $*' (or 'sudo make image')"
  fi
  mkdir -p "$cache"
  local log=$cache/apt-get.log
  echo "image: installing $* with apt-get (log: $log)"
  # The package lists are read once per run, even when a second package turns out to be needed.
  if { [[ -z ${apt_updated:-} ]] && ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1; } ||
    ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
    tail -n 15 "$log" >&2
    fail "apt-get could not install $* (see above): install them by hand, then run make image again"
  fi
  apt_updated=1
}

choose_builder() {
  if [[ $builder == auto ]]; then
    if command -v buildah >/dev/null; then
      builder=buildah
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
      builder=docker
    elif [[ ${1:-} == install ]]; then
      install_packages buildah
      builder=buildah
    else
      fail "buildah is not installed: run make image"
    fi
  fi
  if [[ $builder == buildah ]] && ! command -v buildah >/dev/null; then
    [[ ${1:-} == install ]] || fail "buildah is not installed: run make image"
    install_packages buildah
  fi
  command -v "$builder" >/dev/null || fail "IMAGE_BUILDER=$builder, but $builder is not installed"
}

# image_id REF: the id of a local image, or exit status 1 when there is none.
image_id() {
  case $builder in
  buildah) buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null ;;
  docker) docker image inspect --format '{{.Id}}' "$1" 2>/dev/null ;;
  esac
}

local_base_tag() {
  echo "localhost/credbridge-base:bookworm-$(sha256sum "$here/debian-base.sh" | cut -c1-12)"
}

# make_local_base TAG: debootstrap (or the cached root filesystem) imported as TAG.
make_local_base() {
  local tag=$1 tar
  tar=$cache/debian-${tag##*:}.tar
  mkdir -p "$cache"
  # One build at a time per machine; whoever waited finds the base made.
  exec 9>"$cache/base.lock"
  flock 9
  if base_id=$(image_id "$tag"); then
    return
  fi
  if [[ ! -f $tar ]]; then
    command -v debootstrap >/dev/null || install_packages debootstrap
    [[ $EUID -eq 0 ]] ||
      fail "making the local Debian base needs root (debootstrap): run 'sudo make image', or set BASE_IMAGE to an image you can pull"
    echo "image: making a Debian base image with debootstrap, cached in $tar"
    "$here/debian-base.sh" "$tar" || fail "making the Debian base failed (see above)"
  fi
  echo "image: importing $tar as $tag"
  local path="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  case $builder in
  buildah)
    local container mountpoint
    container=$(buildah from scratch)
    mountpoint=$(buildah mount "$container")
    tar --numeric-owner --xattrs -C "$mountpoint" -xpf "$tar"
    buildah umount "$container" >/dev/null
    buildah config --env "$path" --env LANG=C.UTF-8 --cmd '["python3"]' \
      --label io.credbridge.base="debian bookworm minbase, python3, by hack/image/debian-base.sh" "$container"
    buildah commit --quiet --rm "$container" "$tag" >/dev/null
    ;;
  docker)
    docker import --change "ENV $path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' "$tar" "$tag" >/dev/null
    ;;
  esac
  base_id=$(image_id "$tag")
}

# resolve_base [build]: sets base_ref and base_id. Without `build`, only images already present count.
resolve_base() {
  local local_tag id
  local_tag=$(local_base_tag)
  if [[ $base_mode != local ]] && id=$(image_id "$base_image"); then
    base_ref=$base_image base_id=$id
    return
  fi
  if [[ $base_mode != pull ]] && id=$(image_id "$local_tag"); then
    base_ref=$local_tag base_id=$id
    return
  fi
  [[ ${1:-} == build ]] || fail "no base image present (neither $base_image nor $local_tag): run make image"
  if [[ $base_mode != local ]]; then
    echo "image: pulling $base_image"
    if timeout 600 "$builder" pull "$base_image" 2>&1 | sed 's/^/  /' && id=$(image_id "$base_image"); then
      base_ref=$base_image base_id=$id
      return
    fi
    [[ $base_mode != pull ]] ||
      fail "cannot pull $base_image (see above); IMAGE_BASE=auto makes a local Debian base instead"
    echo "image: cannot pull $base_image; making a local Debian base instead (IMAGE_BASE=pull insists on $base_image)"
  fi
  base_ref=$local_tag
  make_local_base "$local_tag"
}

# inputs_hash BASE_ID: the hash the image tag carries (the files the Dockerfile copies, and the base).
inputs_hash() {
  (
    cd "$repo"
    echo "base $1"
    find Dockerfile .dockerignore pyproject.toml README.md src -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path 'src/*.egg-info/*' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-12
}

image_size() {
  case $builder in
  buildah) buildah images --format '{{.Size}}' "$1" | head -n 1 ;;
  docker) docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f MB\n", $1 / 1e6 }' ;;
  esac
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)
[[ -n $version ]] || fail "no version in pyproject.toml"

if [[ ${1:-} == --print-ref ]]; then
  choose_builder
  resolve_base
  ref=$repository:$version-$(inputs_hash "$base_id")
  image_id "$ref" >/dev/null || fail "$ref is not built (the sources changed since the last build): run make image"
  echo "$ref"
  exit 0
fi

choose_builder install
resolve_base build
ref=$repository:$version-$(inputs_hash "$base_id")
if image_id "$ref" >/dev/null; then
  echo "image: $ref is up to date (base $base_ref), size $(image_size "$ref")"
  exit 0
fi

echo "image: building $ref with $builder from $base_ref"
# pip in the build trusts what this machine trusts (a TLS-inspecting proxy's CA, say): the bundle is
# a build secret, mounted for the pip step only, never stored in a layer.
secrets=()
for bundle in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [[ -n $bundle && -f $bundle && -r $bundle ]]; then
    secrets=(--secret "id=ca-certificates,src=$bundle")
    break
  fi
done
case $builder in
buildah)
  buildah bud --layers --force-rm --build-arg "BASE_IMAGE=$base_ref" "${secrets[@]}" \
    --tag "$ref" --tag "$repository:$version" --file "$repo/Dockerfile" "$repo"
  ;;
docker)
  docker build --build-arg "BASE_IMAGE=$base_ref" "${secrets[@]}" \
    --tag "$ref" --tag "$repository:$version" --file "$repo/Dockerfile" "$repo"
  ;;
esac

# The image this checkout built before, from older sources, is replaced by this one (other
# checkouts' images stay). Which one that was is kept in the cache, not in the image.
mkdir -p "$cache/checkouts"
last=$cache/checkouts/$(echo "$repo" | sha256sum | cut -c1-16)
if [[ -f $last ]]; then
  previous=$(cat "$last")
  [[ $previous == "$ref" ]] || "$builder" rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$ref" >"$last"

echo "image: built $ref in $((SECONDS - started))s, size $(image_size "$ref")"
