"""Key files are written as new 0600 files renamed into place: a rewrite never keeps an old, wider
mode, and never writes through a symlink planted where the key goes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from mlsec.fsutil import write_secret
from mlsec.gates.attest import create_key
from mlsec.sign import keys

Writer = Callable[[Path], object]
WRITERS: dict[str, Writer] = {
    "fsutil.write_secret": lambda path: write_secret(path, b"new secret\n"),
    "sign.keys.create(overwrite=True)": lambda path: keys.create(path.parent, overwrite=True),
    "gates.attest.create_key": lambda path: create_key(path),
}
NAMES = {"fsutil.write_secret": "secret", "sign.keys.create(overwrite=True)": keys.PRIVATE,
         "gates.attest.create_key": "gate.key"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_existing_world_readable_file_becomes_a_new_0600_file(writer: str, tmp_path: Path) -> None:
    path = tmp_path / "keys" / NAMES[writer]
    path.parent.mkdir()
    path.write_bytes(b"old")
    path.chmod(0o644)
    old_inode = os.lstat(path).st_ino
    WRITERS[writer](path)
    assert _mode(path) == 0o600
    assert os.lstat(path).st_ino != old_inode  # a new file, not the old one truncated
    assert path.read_bytes() != b"old"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_symlink_is_replaced_and_its_target_untouched(writer: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    outside.chmod(0o644)
    path = tmp_path / "keys" / NAMES[writer]
    path.parent.mkdir()
    path.symlink_to(outside)
    WRITERS[writer](path)
    assert not path.is_symlink() and path.is_file() and _mode(path) == 0o600
    assert outside.read_bytes() == b"not yours" and _mode(outside) == 0o644


def test_new_key_files_are_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pair = keys.create(tmp_path / "k")
        write_secret(tmp_path / "s", b"x")
    finally:
        os.umask(old)
    assert _mode(pair.private_key) == 0o600 and _mode(tmp_path / "s") == 0o600
    assert keys.load_private(pair.private_key)  # still a readable key
