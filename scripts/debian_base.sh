#!/usr/bin/env bash
# Makes the Dockerfile's base image, debian:bookworm, without an image
# registry: a minimal Debian 12 root file system from debootstrap
# (--variant=minbase) over this machine's Debian mirror, imported with
# `docker import`. Where a registry is reachable, `docker pull
# debian:bookworm` gives the same tag.
#
# Usage: scripts/debian_base.sh [TAG]     (default: debian:bookworm)
# Needs root, debootstrap and a running Docker daemon (DOCKER_HOST and
# DOCKER are honoured: DOCKER is the client to run, default docker).
# Environment: CAFFE_APT_MIRROR (a Debian mirror URI; default: the one this
# machine's apt uses, else http://deb.debian.org/debian).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=engine/apt_mirror.sh
source "$ROOT/engine/apt_mirror.sh"
tag=${1:-debian:bookworm}
docker=${DOCKER:-docker}
case "$tag" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

die() { echo "debian_base: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap > /dev/null || die "no debootstrap; apt-get install debootstrap"
"$docker" info > /dev/null 2>&1 || die "no Docker daemon answers '$docker info'"

mirror=$(apt_mirror)
mirror=${mirror:-http://deb.debian.org/debian}
dir=$(mktemp -d /var/tmp/debian-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "debian_base: debootstrap --variant=minbase bookworm from $mirror" >&2
debootstrap --variant=minbase bookworm "$dir" "$mirror" > "$dir.log" 2>&1 \
  || { tail -n 20 "$dir.log" >&2; die "debootstrap failed; log: $dir.log"; }
rm -f "$dir.log"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | "$docker" import --change 'CMD ["bash"]' - "$tag" > /dev/null
echo "debian_base: imported $tag ($(du -sh "$dir" | cut -f1))" >&2
