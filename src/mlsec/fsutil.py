"""Writing secrets and private copies safely: a new file, owner-only from its first byte, renamed over the old one.

Opening an existing path with O_TRUNC keeps its old mode and follows a symlink planted there; a
fresh O_EXCL|O_NOFOLLOW file renamed into place does neither (rename replaces the link itself).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path


def write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # the umask can only remove bits; make the mode explicit
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_private(src: Path, dst: Path) -> None:
    """Copies a regular file to a new owner-only file: neither end may be a symlink (or, at src, a device or
    fifo), so what was checked at src is what lands at dst."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{src} is not a regular file")
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as g:
            shutil.copyfileobj(f, g)
