#!/usr/bin/env bash
# Builds a Debian bookworm base image (python3, venv, CA certificates) without any registry:
# debootstrap from the machine's Debian mirror, then `podman import`. Use it where docker.io cannot be
# reached; elsewhere `make image BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm` needs none of this.
#   containers/base-image.sh TAG [MIRROR]
set -euo pipefail
tag=${1:?usage: base-image.sh TAG [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/mlsec-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror"
# apt lists and caches are not needed at run time; they only grow the image.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$tag"
