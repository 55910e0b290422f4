"""The OPA engine behind every gate: in-process (OPA's Go engine as a library) or an OPA server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from opa_bindings import OpaEngine, OpaError
from opa_bindings.engine import OpaUndefinedError

from mlsec.digest import sha256_file, sha256_json


# The Go runtime inside the engine library reads these from the environment the process started
# with (not os.environ later). With Go's default GOGC=100 the engine's tiny heap is collected so often
# that GC pauses set the tail latency of decisions; collecting only at a heap limit cuts p99 severalfold
# (benchmarks/bench_gates.py). The local runner passes them to every task; the image sets them.
GO_RUNTIME_ENV = {"GOGC": "off", "GOMEMLIMIT": "256MiB"}


class PolicyError(RuntimeError):
    """The engine could not produce a decision; gates turn this into a deny."""


@dataclass(frozen=True)
class PolicyInput:
    """A policy's `input` as a document (for an OPA server's client) and as its canonical JSON (for the
    in-process engine), which the gate assembles from the evidence JSON it has already made to hash it."""

    doc: dict[str, Any]
    json: bytes


class PolicyEngine(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def policy_sha256(self) -> str | None: ...

    def decide(self, gate: str, policy_input: PolicyInput) -> Any: ...


def policy_files(root: Path, *, tests: bool = False) -> list[Path]:
    files = sorted(root.rglob("*.rego"))
    return [f for f in files if tests or not f.name.endswith("_test.rego")]


def data_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json"))


def data_path(root: Path, file: Path) -> str:
    """Where `opa run`/`opa test` would mount a data file: its directory relative to the root."""
    return ".".join(file.parent.relative_to(root).parts)


# The .manifest metadata key that carries bundle_digest(), so an OPA server can report it.
BUNDLE_DIGEST_KEY = "mlsec_policy_sha256"


def bundle_digest(root: Path) -> str:
    """Names the policy bundle: every non-test policy and every data file, by content."""
    files = policy_files(root) + data_files(root)
    return sha256_json({f.relative_to(root).as_posix(): sha256_file(f) for f in files})


class _JsonInputEngine(OpaEngine):
    """OpaEngine.eval_document for input already encoded as JSON. The gate has the canonical JSON of
    the evidence (it hashes it for the decision record), and encoding the input a second time was a
    tenth of a deployment decision's latency. Mirrors eval_document of the pinned binding version."""

    def eval_document_json(self, path: str, input_json: bytes) -> Any:
        self._check_open()
        with self._eval_lock:
            self._eval_reset()
            rs = self._eval_result(self._call(self._lib.OpaEvalDocument, path.encode(), input_json, 0, 0))
        if not rs or not rs[0].get("expressions"):
            raise OpaUndefinedError(f"data.{path}")
        return rs[0]["expressions"][0]["value"]


class InProcessEngine:
    """OPA v1's Go engine loaded in-process through opa-golib-python-bindings."""

    name = "opa-inprocess"

    def __init__(self, root: Path, *, tests: bool = False) -> None:
        self.root = root
        self._opa = _JsonInputEngine()
        try:
            for f in policy_files(root, tests=tests):
                self._opa.add_policy(f.relative_to(root).as_posix(), f.read_text())
            for f in data_files(root):
                self._opa.add_data(json.loads(f.read_text()), data_path(root, f))
            self._opa.eval_query("x := 1")  # compiles everything now: type and safety errors surface here
        except OpaError as e:
            self._opa.close()
            raise PolicyError(f"cannot load policies from {root}: {e.message}") from e
        except (OSError, json.JSONDecodeError) as e:
            self._opa.close()
            raise PolicyError(f"cannot load policies from {root}: {e}") from e
        self.policy_sha256 = bundle_digest(root)

    @property
    def opa(self) -> Any:
        return self._opa

    def decide(self, gate: str, policy_input: PolicyInput) -> Any:
        try:
            return self._opa.eval_document_json(f"mlsec.gates.{gate}.decision", policy_input.json)
        except OpaError as e:
            raise PolicyError(f"OPA evaluation failed: {e.message}") from e

    def close(self) -> None:
        self._opa.close()


class HttpEngine:
    """An OPA server's Data API, through opa-python-client, with a hard timeout and no retries.

    Decisions record the digest of the bundle the server serves: OPA keeps each activated bundle's
    .manifest at data.system.bundles[<name>].manifest, and `mlsec policy bundle` writes the digest into
    its metadata. A server that cannot say which mlsec bundle it serves is refused, so every decision
    names its policies. Looked up once: engines live for one task, and OPA loads --bundle files once.
    """

    name = "opa-http"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        from opa_client import OpaClient

        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise PolicyError(f"MLSEC_OPA_URL is not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # retries=0: a slow or dead server must fail fast into a deny, not stall the pipeline.
        self._client = OpaClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", retries=0, timeout=timeout_s
        )
        self.url = url
        self.policy_sha256 = self._served_bundle_digest()

    def _served_bundle_digest(self) -> str:
        from opa_client.errors import PolicyNotFoundError

        try:
            bundles = self._client.get_data("system/bundles")["result"]
        except PolicyNotFoundError:
            bundles = {}  # no bundle activated: policies were loaded some other way
        except Exception as e:  # as in decide(): whatever the client raises means "no answer"
            raise PolicyError(f"OPA server {self.url} does not report its bundles: {type(e).__name__}: {e}") from e
        digests = {d for b in (bundles.values() if isinstance(bundles, dict) else []) if (d := _manifest_digest(b))}
        if len(digests) != 1:
            found = ", ".join(sorted(digests)) or "none"
            raise PolicyError(f"OPA server {self.url} must serve exactly one bundle from `mlsec policy bundle` "
                              f"(manifest metadata {BUNDLE_DIGEST_KEY}); found: {found}")
        return digests.pop()

    def decide(self, gate: str, policy_input: PolicyInput) -> Any:
        try:
            response = self._client.query_rule(policy_input.doc, f"mlsec/gates/{gate}", "decision")
        except Exception as e:  # requests raises a zoo of types; every one of them is a deny
            raise PolicyError(f"OPA server {self.url} failed: {type(e).__name__}: {e}") from e
        if "result" not in response:
            raise PolicyError(f"OPA server returned no result for mlsec.gates.{gate}.decision")
        return response["result"]


def _manifest_digest(bundle: Any) -> str | None:
    manifest = bundle.get("manifest") if isinstance(bundle, dict) else None
    metadata = manifest.get("metadata") if isinstance(manifest, dict) else None
    digest = metadata.get(BUNDLE_DIGEST_KEY) if isinstance(metadata, dict) else None
    return digest if isinstance(digest, str) else None


def default_engine(policy_root: Path, opa_url: str | None, timeout_s: float) -> PolicyEngine:
    if opa_url:
        return HttpEngine(opa_url, timeout_s=timeout_s)
    return InProcessEngine(policy_root)
