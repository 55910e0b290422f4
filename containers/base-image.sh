#!/usr/bin/env bash
# Builds a Debian bookworm base image (python3, venv, CA certificates) without any registry: mmdebstrap from
# the machine's Debian mirror, bookworm with its point-release and security updates, streamed as a tarball
# straight into `podman import`. Use it where docker.io cannot be reached; elsewhere
# `make image BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm` needs none of this.
#   containers/base-image.sh TAG [MIRROR [SECURITY_MIRROR]]
# mmdebstrap rather than debootstrap: apt downloads in parallel, dpkg runs without fsync (eatmydata: the
# result is a tarball, durability is moot), and only the essential set is installed, no apt (nothing installs
# packages at run time); debootstrap took ~3 min here on a loaded machine and missed the security updates.
# passwd: the Dockerfile's useradd; libstdc++6: numpy's and most native wheels' C++ runtime (minbase had it via apt).
set -euo pipefail
tag=${1:?usage: base-image.sh TAG [MIRROR [SECURITY_MIRROR]]}
mirror=${2:-http://deb.debian.org/debian}
security=${3:-http://deb.debian.org/debian-security}
# Docs, man pages and translations are not needed at run time.
mmdebstrap --variant=essential --include=python3,python3-venv,ca-certificates,passwd,libstdc++6 --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm - "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" \
  | podman import \
      --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$tag"
