"""What the deployment gate receives (mlsec.evidence.deployment/v1): the exact objects to apply."""

from __future__ import annotations

from typing import Any, Literal

from mlsec.evidence import Evidence, Strict


class Release(Strict):
    model: str
    version: str
    stage: str
    target: Literal["local", "cluster"]
    namespace: str


class ImageSignature(Strict):
    """The image the cluster objects run, and whether its signature over that digest verified (mlsec.imagesig)."""
    digest: str
    signature_verified: bool
    error: str | None = None


class DeploymentEvidence(Evidence):
    kind: Literal["mlsec.evidence.deployment/v1"] = "mlsec.evidence.deployment/v1"
    release: Release
    objects: list[dict[str, Any]]
    images: list[ImageSignature] = []
