"""Supply chain of a training run: a base model is scanned before anything loads it, and the training
environment is described by a CycloneDX SBOM that travels (and is signed) with the model."""

from __future__ import annotations

import importlib.metadata as md
import json
import struct
import uuid
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from mlsec import __version__
from mlsec.digest import sha256_file
from mlsec.train.evidence import BaseModel, Scan

SBOM = "sbom.cdx.json"


class BaseModelRefused(ValueError):
    """The base model was not loaded: what is wrong with it is in the message."""


def _is_safetensors(path: Path) -> bool:
    """A safetensors file is an 8-byte little-endian header length, then that much JSON: nothing executable."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return False
        (n,) = struct.unpack("<Q", head)
        if not 1 < n <= min(path.stat().st_size - 8, 100_000_000):
            return False
        try:
            return isinstance(json.loads(f.read(n)), dict)
        except ValueError:
            return False


def _picklescan(path: Path) -> Scan:
    from picklescan.scanner import SafetyLevel, scan_file_path

    result = scan_file_path(str(path))
    issues = [f"{g.module}.{g.name} ({g.safety.value})" for g in result.globals if g.safety != SafetyLevel.Innocuous]
    if result.scan_err:
        issues.append("picklescan could not parse the file")
    return Scan(scanner=f"picklescan {md.version('picklescan')}", issues=issues)


def _modelscan(path: Path) -> Scan:
    from modelscan.modelscan import ModelScan

    report = ModelScan().scan(str(path))
    issues = [f"{i.get('module')}.{i.get('operator')} ({i.get('severity')})" for i in report.get("issues", [])]
    issues += [f"modelscan error: {e.get('description', e)}" for e in report.get("errors", [])]
    return Scan(scanner=f"modelscan {md.version('modelscan')}", issues=issues)


def scan(path: Path) -> BaseModel:
    """Reads the file only as bytes: its format from its content (not its name), then, for anything that
    is not safetensors, what two static pickle scanners find in it. Nothing is unpickled here."""
    if not path.is_file() or path.is_symlink():
        raise BaseModelRefused(f"base model {path} is not a regular file")
    digest = sha256_file(path)
    if _is_safetensors(path):
        return BaseModel(digest=digest, format="safetensors", scans=[])
    return BaseModel(digest=digest, format="pickle", scans=[_picklescan(path), _modelscan(path)])


def load_base(path: Path, allow_pickle: bool) -> tuple[BaseModel, dict[str, torch.Tensor]]:
    """Scans first, then loads: safetensors as tensors; a pickle only when allowed and every scanner cleared
    it, and then with torch's weights-only unpickler (tensors and plain containers, no arbitrary globals)."""
    report = scan(path)
    if report.format == "pickle":
        found = [f"{s.scanner}: {i}" for s in report.scans for i in s.issues]
        if found:
            raise BaseModelRefused(f"base model {path.name} refused before loading: scanners found {found}")
        if not allow_pickle:
            raise BaseModelRefused(f"base model {path.name} is a pickle; pickle base models are not allowed "
                                   "(convert it to safetensors, or allow pickles after review)")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = load_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BaseModelRefused(f"base model {path.name} is not a flat mapping of tensor names to tensors")
    return report, state


def write_sbom(out_dir: Path) -> int:
    """The Python distributions of this environment as a CycloneDX 1.6 JSON document; deterministic (no
    timestamp, a serial number derived from the content) so identical environments give identical files."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    dists = sorted({(d.metadata["Name"].lower(), d.version) for d in md.distributions() if d.metadata["Name"]})
    components = [Component(type=ComponentType.LIBRARY, name=n, version=v, bom_ref=f"pkg:pypi/{n}@{v}",
                            purl=PackageURL("pypi", name=n, version=v)) for n, v in dists]
    root = Component(type=ComponentType.APPLICATION, name="mlsec-training", version=__version__,
                     bom_ref="mlsec-training")
    bom = Bom(components=components, serial_number=uuid.uuid5(uuid.NAMESPACE_URL, "mlsec:" + repr(dists)))
    bom.metadata.component = root
    bom.register_dependency(root, components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"].pop("timestamp", None)  # the model's evidence dates the run; the SBOM names the environment
    (out_dir / SBOM).write_text(json.dumps(doc, indent=1, sort_keys=True))
    return len(components)
