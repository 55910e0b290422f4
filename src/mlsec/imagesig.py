"""The image's SBOM and signature: what is in the image, and who vouches for its digest.

SBOM: CycloneDX 1.5 JSON listing the image's installed packages (Python distributions of its venv, Debian
packages), read from inside the image itself, with the image (name, digest) as the described component.
Signature: an in-toto Statement whose subject is the image digest (and whose predicate names the SBOM's
sha256), in a DSSE envelope signed with the model signing key. The serve stage verifies it before the
deployment gate judges the release; deployment.rego then admits only images whose digest verified.

    python -m mlsec.imagesig sbom   REF@sha256:... OUT.cdx.json
    python -m mlsec.imagesig sign   REF@sha256:... SBOM PRIVATE_KEY OUT.sig.json
    python -m mlsec.imagesig verify REF@sha256:... SIG PUBLIC_KEY [SBOM]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from mlsec.gates.attest import AttestationError, open_envelope, sign_statement
from mlsec.sign import keys

PREDICATE_TYPE = "https://mlsec.dev/image-signature/v1"
_DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")

# What the image lists about itself: its venv's distributions and its Debian packages.
_LIST_PACKAGES = (
    "import importlib.metadata as m, json, subprocess; "
    "py = sorted({(d.metadata['Name'], d.version) for d in m.distributions()}); "
    "deb = subprocess.run(['dpkg-query', '-W', '-f', '${Package}\\t${Version}\\n'], capture_output=True, "
    "text=True, check=True).stdout.split('\\n'); "
    "print(json.dumps({'python': py, 'deb': [line.split('\\t') for line in deb if line]}))"
)


def split_ref(image: str) -> tuple[str, str]:
    m = _DIGEST_REF.match(image)
    if not m:
        raise ValueError(f"image {image!r} is not REF@sha256:<64 hex>: only a digest can be signed or listed")
    return m["repo"], m["digest"]


def image_packages(image: str) -> dict[str, list[list[str]]]:
    """Runs the image itself, offline and unprivileged, to list what it holds; MLSEC_CONTAINER_ENGINE=docker
    where the image lives in Docker's store (deploy/kind-up.sh) rather than this project's podman storage."""
    import os
    import subprocess

    from mlsec.containers import CONTAINERS_ENV

    engine = os.environ.get("MLSEC_CONTAINER_ENGINE", "podman")
    out = subprocess.run([engine, "run", "--rm", "--network=none", "--read-only", "--cap-drop=ALL", "--entrypoint",
                          "python", image, "-c", _LIST_PACKAGES], env={**os.environ, **CONTAINERS_ENV},
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def sbom(image: str, packages: dict[str, list[list[str]]]) -> dict[str, Any]:
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    repo, digest = split_ref(image)
    bom = Bom()
    bom.metadata.component = Component(
        name=repo, version=digest, type=ComponentType.CONTAINER,
        purl=PackageURL(type="oci", name=repo.rsplit("/", 1)[-1], version=digest, qualifiers={"repository_url": repo}))
    for name, version in packages["python"]:
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY,
                                     purl=PackageURL("pypi", None, name.lower(), version)))
    for name, version in packages["deb"]:
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY,
                                     purl=PackageURL("deb", "debian", name, version)))
    bom.register_dependency(bom.metadata.component, list(bom.components))  # the image contains them all
    return json.loads(JsonV1Dot5(bom).output_as_string())  # type: ignore[no-any-return]


def validate_sbom(doc: str) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(doc)
    if error is not None:
        raise ValueError(f"SBOM is not valid CycloneDX 1.5: {error}")


def statement(image: str, sbom_sha256: str) -> dict[str, Any]:
    repo, digest = split_ref(image)
    return {"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": repo, "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": PREDICATE_TYPE, "predicate": {"sbom": {"sha256": sbom_sha256}}}


def sign(image: str, sbom_bytes: bytes, private_key: Path) -> dict[str, Any]:
    return sign_statement(statement(image, hashlib.sha256(sbom_bytes).hexdigest()), keys.sslib_signer(private_key))


def verify(image: str, envelope: bytes, public_key: Path, sbom_bytes: bytes | None = None) -> dict[str, Any]:
    """The statement, once it verifies with public_key and names exactly this image digest (and SBOM)."""
    _, digest = split_ref(image)
    stmt = open_envelope(envelope, [keys.sslib_key(keys.load_public(public_key))])
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError(f"predicate type {stmt.get('predicateType')!r} is not {PREDICATE_TYPE}")
    subjects = [s.get("digest", {}).get("sha256") for s in stmt.get("subject", [])]
    if subjects != [digest.removeprefix("sha256:")]:
        raise AttestationError(f"signature is over {subjects}, not {digest}")
    if sbom_bytes is not None and stmt["predicate"]["sbom"]["sha256"] != hashlib.sha256(sbom_bytes).hexdigest():
        raise AttestationError("the SBOM is not the one the signature names")
    return stmt


def signed_image(image: str, signature: Path | None, public_key: Path) -> dict[str, Any]:
    """What the deployment gate reads about the image: its digest and whether its signature verified."""
    _, digest = split_ref(image)
    try:
        if signature is None:
            raise AttestationError("no image signature given (MLSEC_IMAGE_SIGNATURE)")
        verify(image, signature.read_bytes(), public_key)
        return {"digest": digest, "signature_verified": True, "error": None}
    except (AttestationError, OSError, ValueError) as e:
        return {"digest": digest, "signature_verified": False, "error": str(e)}


def main(argv: list[str]) -> int:
    cmd, image, *rest = argv
    if cmd == "sbom":
        doc = json.dumps(sbom(image, image_packages(image)), indent=2, sort_keys=True)
        validate_sbom(doc)
        Path(rest[0]).write_text(doc + "\n")
        print(f"wrote {rest[0]}: CycloneDX 1.5 SBOM of {image}")
    elif cmd == "sign":
        sbom_path, private, out = rest
        Path(out).write_text(json.dumps(sign(image, Path(sbom_path).read_bytes(), Path(private)), indent=2) + "\n")
        print(f"wrote {out}: signature over {split_ref(image)[1]} and its SBOM")
    elif cmd == "verify":
        sig, public, *listed = rest
        sbom_bytes = Path(listed[0]).read_bytes() if listed else None
        if sbom_bytes is not None:
            validate_sbom(sbom_bytes.decode())
        verify(image, Path(sig).read_bytes(), Path(public), sbom_bytes)
        print(f"OK: {image} signed by {keys.fingerprint(Path(public))[:16]}{' with its SBOM' if listed else ''}")
    else:
        raise ValueError(f"unknown command {cmd!r}: sbom, sign or verify")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
