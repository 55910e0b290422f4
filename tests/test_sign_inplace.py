"""Signing without copying: the bundle hard-links the model's files, and one hashing pass serves the
signature and the model digest (the fast path must name exactly what tree_manifest would)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsec.digest import tree_digest, tree_manifest
from mlsec.sign import keys, stage
from mlsec.sign.attestation import Materials


def _model(root: Path) -> Path:
    model = root / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(os.urandom(3 << 20))
    (model / "sub" / "config.json").write_text("{}")
    (model / ".gitattributes").write_text("hidden files are signed too")
    return model


def _sign(model: Path, out: Path, pair: keys.KeyPair) -> Path:
    return stage.sign(model, out, pair, Materials("d", "a" * 64, {}, "c", "i"), "b")


def test_bundle_links_the_files_and_the_signed_manifest_is_the_tree_manifest(tmp_path: Path,
                                                                               key_pair: keys.KeyPair) -> None:
    model = _model(tmp_path)
    bundle = _sign(model, tmp_path / "signed", key_pair)
    assert (bundle / "model" / "weights.bin").stat().st_ino == (model / "weights.bin").stat().st_ino
    assert stage.signed_manifest(bundle / stage.SIGNATURE) == tree_manifest(bundle / "model")
    v = stage.verify(bundle, key_pair.public_key)
    assert v.model_digest == tree_digest(model) == v.attestation.subject_digest
    ev = stage.evidence(bundle, "m", key_pair.public_key)
    assert ev.subject.digest == tree_digest(model) and ev.files == sorted(tree_manifest(model))


@pytest.mark.parametrize("change", ["rewrite", "add", "remove"])
def test_a_change_to_the_linked_source_after_signing_fails_verification(tmp_path: Path, key_pair: keys.KeyPair,
                                                                        change: str) -> None:
    model = _model(tmp_path)
    bundle = _sign(model, tmp_path / "signed", key_pair)
    if change == "rewrite":  # the same inode: the bundle sees it
        with (model / "weights.bin").open("r+b") as f:
            f.write(b"\0")
    elif change == "add":
        (bundle / "model" / "extra.bin").write_bytes(b"x")
    else:
        (bundle / "model" / "sub" / "config.json").unlink()
    with pytest.raises(ValueError, match="model signature verification failed"):
        stage.verify(bundle, key_pair.public_key)
    ev = stage.evidence(bundle, "m", key_pair.public_key)
    assert not ev.signature.verified and ev.subject.digest == tree_digest(bundle / "model")


def test_symlink_in_the_model_is_refused(tmp_path: Path, key_pair: keys.KeyPair) -> None:
    model = _model(tmp_path)
    (model / "link").symlink_to(model / "weights.bin")
    with pytest.raises(ValueError, match="symlink"):
        _sign(model, tmp_path / "signed", key_pair)
