"""Build an OPA bundle (what `opa run --bundle` and bundle servers load) from policies/.

Bundles only read data from files named data.json, so the per-environment files are merged into
data/data.json: the same document tree `opa test policies/` builds from them.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from mlsec.gates.engine import BUNDLE_DIGEST_KEY, bundle_digest, data_files, data_path, policy_files


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(payload), 0o644, 0  # reproducible: same input, same bytes
    tar.addfile(info, io.BytesIO(payload))


def build(root: Path, out: Path, revision: str) -> str:
    """Writes the bundle; returns the policy digest recorded in every decision it will produce."""
    merged: dict[str, dict[str, object]] = {}
    for f in data_files(root):
        merged.setdefault(data_path(root, f), {}).update(json.loads(f.read_text()))
    digest = bundle_digest(root)
    manifest = {"revision": revision, "roots": ["mlsec", *sorted(merged)],
                "metadata": {BUNDLE_DIGEST_KEY: digest}}
    with tarfile.open(out, "w:gz") as tar:
        _add(tar, ".manifest", json.dumps(manifest, sort_keys=True).encode())
        for f in policy_files(root):
            _add(tar, f.relative_to(root).as_posix(), f.read_bytes())
        for path, doc in sorted(merged.items()):
            _add(tar, f"{path.replace('.', '/')}/data.json", json.dumps(doc, sort_keys=True).encode())
    return digest
