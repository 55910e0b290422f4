"""What a model file is, read from its bytes rather than its name: a pickle renamed weights.dat or
config.json is still a pickle. The signing gate allows only formats that cannot run code when loaded."""

from __future__ import annotations

import json
from pathlib import Path

# safetensors caps its JSON header at 100 MB; JSON sidecars (config, tokenizer) are far smaller.
_MAX_HEADER = 100 * 1024 * 1024
_MAX_JSON = 64 * 1024 * 1024


def sniff(path: Path) -> str:
    """One of: safetensors, json, pickle, zip (torch.save, npz, joblib archives), unknown."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        # safetensors first: its 8-byte header length can begin like a pickle (640 = 80 02 00 ...), and
        # the structural check (that many bytes of JSON object) is the stricter one.
        if len(head) == 8 and 2 <= (n := int.from_bytes(head, "little")) <= min(size - 8, _MAX_HEADER):
            if isinstance(_parse(f.read(n)), dict):
                return "safetensors"
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return "pickle"  # protocol 2+ header; older protocols end up "unknown", which is denied too
        if head[:4] == b"PK\x03\x04":
            return "zip"
    if size <= _MAX_JSON and _parse(path.read_bytes()) is not _INVALID:
        return "json"
    return "unknown"


_INVALID = object()


def _parse(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _INVALID
