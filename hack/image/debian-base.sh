#!/usr/bin/env bash
# Makes a small Debian root filesystem with python3 and its venv module, as a tar file: the base of
# the operator image on machines that cannot pull one from a registry (hack/image/build.sh imports
# the tar as localhost/credbridge-base:<suite>-<hash of this file>, so editing this file makes a new
# base). Needs root and debootstrap. Packages come from the Debian mirror this machine's apt sources
# name (DEBIAN_MIRROR overrides it).
#
# Usage: hack/image/debian-base.sh OUTPUT.tar
set -euo pipefail

suite=bookworm
packages=python3,python3-venv,ca-certificates
output=${1:?usage: debian-base.sh OUTPUT.tar}

# The first http(s) URI that apt's sources use for $suite (deb822 .sources files or sources.list).
mirror_from_apt_sources() {
  local sources=()
  for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -r $file ]] && sources+=("$file")
  done
  ((${#sources[@]})) || return 0
  awk -v suite="$suite" '
    FNR == 1 { uri = "" }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri ~ /^https?:/ && !found) found = uri }
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite && $i ~ /^https?:/ && !found) found = $i
    }
    END { print found }' "${sources[@]}"
}

mirror=${DEBIAN_MIRROR:-$(mirror_from_apt_sources)}
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$(dirname "$output")"
work=$(mktemp -d "$(dirname "$output")/rootfs.XXXXXX")
rootfs=$work/rootfs
cleanup() {
  # debootstrap mounts /proc and /sys inside the root filesystem; never delete through a mount.
  findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "  base: debootstrap --variant=minbase $suite from $mirror (about a minute)"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" 2>&1 |
  tee "$work/debootstrap.log" |
  awk '
    $1 == "I:" && $2 == "Retrieving" && NF == 4 {
      if (++fetched % 25 == 0) { printf "  base: %d packages downloaded\n", fetched; fflush() }
      next
    }
    $1 == "I:" && $2 == "Validating" && NF == 4 { next }
    $1 == "I:" && NF == 3 && $2 ~ /^(Extracting|Unpacking|Configuring)$/ { next }
    $1 == "I:" { sub(/^I: /, "  base: "); print; fflush() }
    $1 ~ /^[EW]:$/ { print "  base: " $0; fflush() }'; then
  echo "debian-base.sh: debootstrap failed; last lines of its log:" >&2
  tail -n 20 "$work/debootstrap.log" >&2
  [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
fi

# What a container never reads: package lists and caches, logs, documentation (licences stay),
# manuals and translations; and no copy of this machine's DNS settings or hostname.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale \
  "$rootfs"/usr/share/lintian "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
# Packages installed later (FROM this base) skip the same files, as Debian's own slim images do.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF

tar --numeric-owner --xattrs -C "$rootfs" -cf "$output.tmp" .
mv -f "$output.tmp" "$output"
echo "  base: root filesystem ready after $((SECONDS - started))s ($(du -sh "$rootfs" | cut -f1))"
