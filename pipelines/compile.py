"""Compiles the pipeline to KFP IR naming one image for every task, pinned by digest where it matters.

A cluster runs exactly the image the IR names; a tag can be moved to other bytes after the gates judged
a run, a digest cannot. So staging and prod IR must name the image as REF@sha256:<digest> (`make image`
records it in build/image.ref).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*@sha256:[0-9a-f]{64}$")
PINNED_ENVS = frozenset({"staging", "prod"})


class ImageNotPinned(ValueError):
    pass


def check_image(image: str, environment: str) -> None:
    if environment in PINNED_ENVS and not DIGEST_REF.match(image):
        raise ImageNotPinned(
            f"compiling for {environment} needs the image pinned by digest (REF@sha256:<64 hex>), got {image!r}; "
            "run `make image` and pass --image \"$(cat build/image.ref)\"")
    if "@" in image and not DIGEST_REF.match(image):
        raise ImageNotPinned(f"image {image!r}: a digest must be sha256:<64 lowercase hex>")


def compile_pipeline(output: Path, environment: str, image: str | None = None) -> str:
    """Writes the IR to output with every executor's image set to image (default: the components' own)."""
    from kfp import compiler

    from components._image import IMAGE
    from pipelines.secure_pipeline import secure_pipeline

    image = image or IMAGE
    check_image(image, environment)
    compiler.Compiler().compile(secure_pipeline, str(output))
    docs = list(yaml.safe_load_all(output.read_text()))
    executors: dict[str, Any] = docs[0]["deploymentSpec"]["executors"]
    for ex in executors.values():
        ex["container"]["image"] = image
    output.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return image
