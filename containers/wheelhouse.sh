#!/usr/bin/env bash
# Downloads the image's pinned wheels (containers/lock.py) once, with the host's pip and its settings (index,
# mirror, proxy, CA), into a wheelhouse the image build mounts read-only and installs from offline.
#   containers/wheelhouse.sh PIP SPEC_DIR WHEELHOUSE [TORCH_INDEX]
# SPEC_DIR holds torch.txt and requirements.txt (containers/lock.py). torch.txt is fetched with dependencies
# (a CUDA build of torch brings nvidia-* wheels the CPU venv has no pin for; torch's own wheel pins them),
# requirements.txt without (the lock already is the closure), eight downloads at a time.
# Source distributions are built into wheels here, so the build needs no compiler and no index.
set -euo pipefail
pip=${1:?usage: wheelhouse.sh PIP SPEC_DIR WHEELHOUSE [TORCH_INDEX]}
spec=${2:?} wheels=${3:?} index=${4:-}
mkdir -p "$wheels"
fetch=("$pip" download --quiet --disable-pip-version-check --ignore-requires-python --dest "$wheels")
# A host pip config naming file:// indexes warns for every package they lack: noise, not news.
quiet() { grep -v 'is neither a file nor a directory' >&2 || true; }
"${fetch[@]}" ${index:+--extra-index-url "$index"} -r "$spec/torch.txt" 2> >(quiet) &
torch=$!
xargs -P 8 -n 12 "${fetch[@]}" --no-deps < "$spec/requirements.txt" 2> >(quiet)
wait "$torch"
shopt -s nullglob
sdists=("$wheels"/*.tar.gz "$wheels"/*.zip)
if ((${#sdists[@]})); then
  "$pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$wheels" "${sdists[@]}"
  rm -f "${sdists[@]}"
fi
echo "$wheels: $(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"
