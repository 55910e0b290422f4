"""A model server started for a test module, with the guard settings the test needs, its log captured."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.serve import auth
from mlsec.serve.deploy import free_port, wait_ready

GOOD = {"age": 40, "income": 50000.0, "loan_amount": 10000.0, "credit_history_years": 10,
        "num_late_payments": 0, "debt_to_income": 0.3}
V1, V2 = "/v1/models/credit:predict", "/v2/models/credit/infer"

_LAUNCH = """
import json, logging, sys
from pathlib import Path
from mlsec.serve.guard import GuardConfig
from mlsec.serve.server import serve
from mlsec.threatmodel import switch
switch.apply_from_env()  # a proof run's control switch reaches the server process too (threats check --prove)
a = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO)
serve("credit", Path(a["bundle"]), Path(a["public_key"]), host="127.0.0.1", port=a["port"],
      api_keys=Path(a["keys"]), guard=GuardConfig(audit_log=Path(a["audit"]), **a["guard"]))
"""


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    keys: dict[str, str]
    audit: Path
    log: Path
    features: list[str]

    def connect(self, source: str = "127.0.0.1") -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10, source_address=(source, 0))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def wait_audit(self, **match: Any) -> list[dict[str, Any]]:
        """Audit lines holding these values, waiting briefly: a line is written just after its response."""
        import time

        deadline = time.monotonic() + 3.0
        while not (found := [e for e in self.audit_lines() if match.items() <= e.items()]) and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


def start(tmp: Path, bundle: Path, public_key: Path, clients: list[str], **guard: Any) -> Running:
    port, keyfile = free_port(), tmp / "keys.json"
    keys = {c: auth.create(keyfile, c) for c in clients}
    audit, log = tmp / "requests.jsonl", tmp / "server.log"
    args = {"bundle": str(bundle), "public_key": str(public_key), "port": port, "keys": str(keyfile),
            "audit": str(audit), "guard": guard}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, json.dumps(args)], stdout=out, stderr=subprocess.STDOUT)
    assert wait_ready(f"http://127.0.0.1:{port}", "credit", 90, lambda: proc.poll() is None), log.read_text()[-3000:]
    features = json.loads((bundle / "model" / "config.json").read_text())["features"]
    return Running(proc, "127.0.0.1", port, keys, audit, log, features)


def post(conn: http.client.HTTPConnection, path: str, body: bytes | str | Any, key: str | None,
         **headers: str | bytes) -> tuple[int, dict[str, Any]]:
    """One request on this (keep-alive) connection; returns status and the JSON body."""
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    conn.putrequest("POST", path)
    hdrs: dict[str, str | bytes] = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders(data)
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, json.loads(raw) if raw else {}


def read_response(s: socket.socket) -> bytes:
    """One response read from a raw socket: its head, then Content-Length bytes of body (less if the server
    closes first). The socket's timeout makes a hang a failure."""
    got = b""
    while b"\r\n\r\n" not in got or (b"content-length" in got.lower() and not _complete(got)):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def read_to_close(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection. The socket's timeout makes a held
    connection a failure."""
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    return reply


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
    return len(body) >= length
