"""The model server's front door (ASGI middleware): only known routes, bounded JSON bodies,
authenticated clients, per-client rate limits, extraction and drift monitoring, and an audit line
per request that never holds the raw input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import parse
from prometheus_client import Counter, Gauge, Histogram

from mlsec.incident import Blocklist
from mlsec.serve import inputs, oip
from mlsec.serve.auth import ApiKeys, Lockout
from mlsec.serve.monitor import DriftMonitor, ExtractionMonitor
from mlsec.serve.openapi import spec
from mlsec.serve.ratelimit import MovingWindow
from mlsec.train.model import ModelConfig

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUESTS = Counter("mlsec_requests_total", "Inference requests by HTTP status", ["model", "status"])
LATENCY = Histogram("mlsec_request_latency_seconds", "Inference latency including the guard", ["model"])
REJECTED = Counter("mlsec_rejections_total", "Requests refused, by reason", ["model", "reason"])
DRIFT = Gauge("mlsec_feature_drift_psi", "Population stability index of recent inputs vs training", ["model", "feature"])
FLAGGED = Gauge("mlsec_flagged_clients", "Clients flagged for extraction-like behaviour", ["model"])


@dataclass(frozen=True)
class GuardConfig:
    max_body_bytes: int = 64 * 1024
    rate: str = "50/second"
    flagged_rate: str = "1/second"  # what a flagged client is throttled to
    audit_log: Path | None = None  # None: one JSON line per request on stdout (for the cluster's log pipeline)
    max_bad_keys: int = 20  # failed authentications per source address within bad_key_window_s ...
    bad_key_window_s: float = 60.0
    lockout_s: float = 300.0  # ... before the address is locked out for this long
    blocklist: Path | None = None  # clients refused from the next request on (mlsec incident block-client)
    # The whole body must arrive within this many seconds of the request's headers (uvicorn has no such limit):
    # a client dribbling its body (slowloris) gets a 408 and a closed connection instead of holding them open.
    body_timeout_s: float = 10.0
    # ... and the request line and headers within this many seconds of the connection opening or of their first
    # byte (mlsec.serve.connection): no connection is held by sending nothing, or headers a byte at a time.
    head_timeout_s: float = 10.0
    # An idle keep-alive connection is closed after this many seconds (uvicorn's timeout_keep_alive; 65, as kserve
    # sets it, outlasts the 60 s idle timeout of common load balancers, so they never reuse a closed connection).
    idle_timeout_s: int = 65
    # A connection whose peer leaves sent responses unacknowledged (stops reading) this long is reset.
    write_timeout_s: float = 30.0


class Guard:
    def __init__(self, app: Callable[..., Awaitable[None]], model: str, cfg: ModelConfig, keys: ApiKeys,
                 settings: GuardConfig, extraction: ExtractionMonitor, drift: DriftMonitor, version: str = "") -> None:
        self.app, self.model, self.cfg, self.keys, self.settings = app, model, cfg, keys, settings
        self.version = version  # the signed model's digest, the OIP model version
        self.extraction, self.drift = extraction, drift
        for feature in cfg.features:
            # Computed when /metrics is scraped, from incrementally kept bin counts: always current, cheap.
            DRIFT.labels(model, feature).set_function(self._psi_of(feature))
        FLAGGED.labels(model).set_function(lambda: len(self.extraction.flagged))  # flags decay
        self.limiter = MovingWindow()
        self.rate, self.flagged_rate = parse(settings.rate), parse(settings.flagged_rate)
        self.lockout = Lockout(settings.max_bad_keys, settings.bad_key_window_s, settings.lockout_s)
        self.blocklist = Blocklist(Path(settings.blocklist)) if settings.blocklist else None
        # Probes and the server's own metadata are public; what describes the model needs its key (docs/serving.md).
        self.public = {("GET", p) for p in ("/", "/metrics", "/v1/models", f"/v1/models/{model}",
                                             "/v2/health/live", "/v2/health/ready", f"/v2/models/{model}/ready")}
        self.infer = {("POST", f"/v1/models/{model}:predict"): "v1", ("POST", f"/v2/models/{model}/infer"): "v2",
                      ("GET", f"/v2/models/{model}"): "metadata", ("GET", "/openapi.json"): "openapi"}
        if version:  # OIP's versioned routes, for the signed digest only
            versioned = f"/v2/models/{model}/versions/{version}"
            self.infer |= {("POST", f"{versioned}/infer"): "v2", ("GET", versioned): "metadata"}
        self.documents = {"metadata": oip.model_metadata(model, version, cfg), "openapi": spec(model, cfg, version)}
        self.server_metadata = oip.server_metadata()
        self._audit_file = settings.audit_log.open("a", buffering=1) if settings.audit_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route here speaks it; refused before any app sees it (HTTP 403)
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        key = (scope["method"], scope["path"])
        if key == ("GET", "/v2"):
            await _reply(send, 200, self.server_metadata)
        elif key in self.public:
            await self.app(scope, receive, send)
        elif key in self.infer:
            await self._inference(scope, receive, send, self.infer[key])
        else:
            # Model repository load/unload, docs, unknown models: none of it is exposed.
            await _reply(send, 404, {"error": "no such route"})

    async def _inference(self, scope: Scope, receive: Receive, send_on: Send, protocol: str) -> None:
        started, loop_started = time.perf_counter(), asyncio.get_running_loop().time()
        client: str | None = None
        status, reason, digest, flagged, replied = 0, "", "", None, False

        async def send(message: Message) -> None:
            nonlocal replied
            replied = replied or message["type"] == "http.response.start"
            await send_on(message)

        async def refuse(code: int, why: str, message: str, extra: dict[str, str] | None = None) -> None:
            nonlocal status, reason
            status, reason = code, why
            REJECTED.labels(self.model, why).inc()
            await _reply(send, code, {"error": message}, extra)

        try:
            # Header bytes are latin-1 by the HTTP and ASGI specs: any byte decodes, nothing raises.
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            address = str((scope.get("client") or ("unknown",))[0])
            locked = self.lockout.locked(address, time.monotonic())
            if locked:  # before any key lookup
                await refuse(429, "locked_out", "too many failed authentications from this address",
                             {"retry-after": str(math.ceil(locked))})
                return
            who = self.keys.client(_presented_key(headers))
            if who is None:
                self.lockout.failed(address, time.monotonic())
                await refuse(401, "unauthenticated", "missing or invalid API key", {"www-authenticate": "Bearer"})
                return
            client = who.id
            if self.blocklist is not None and self.blocklist.blocked(client):
                await refuse(403, "blocked", "this client is blocked")
                return
            if not who.may_use(self.model):
                await refuse(403, "forbidden", f"this key is not allowed to use model {self.model!r}")
                return
            limit = self.flagged_rate if self.extraction.is_flagged(client) else self.rate
            if not self.limiter.hit(limit, self.model, client):
                await refuse(429, "rate_limited", f"rate limit {limit} exceeded", {"retry-after": "1"})
                return
            if protocol in self.documents:  # model metadata: no body to read
                status, reason = 200, "described"
                await _reply(send, 200, self.documents[protocol])
                return
            try:
                kind = oip.media(headers, protocol)
            except inputs.BadRequest as e:
                await refuse(e.status, "content_type", str(e))
                return
            declared = headers.get("content-length") or "0"
            if not declared.isdigit() or len(declared) > 18:
                await refuse(400, "bad_length", "content-length must be a number")
                return
            if int(declared) > self.settings.max_body_bytes:
                await refuse(413, "too_large", f"body exceeds {self.settings.max_body_bytes} bytes")
                return
            try:
                async with _body_deadline(loop_started + self.settings.body_timeout_s):
                    body = await _read(receive, self.settings.max_body_bytes)
            except TimeoutError:
                await refuse(408, "body_timeout", f"request body not received within {self.settings.body_timeout_s:g}s",
                             {"connection": "close"})
                return
            if body is None:
                await refuse(413, "too_large", f"body exceeds {self.settings.max_body_bytes} bytes")
                return
            digest = hashlib.sha256(body).hexdigest()
            try:  # the model's own row parser: the monitors see what it scores
                decoded = oip.decode(body, kind, headers, protocol, self.model, self.cfg)
            except inputs.BadRequest as e:
                await refuse(e.status, "invalid_json" if e.status == 400 and "JSON" in str(e) else "invalid_input",
                             str(e))
                return
            rows = decoded.rows
            flagged = self.extraction.observe(client, rows)
            answer = send if protocol == "v1" else oip.responder(send, decoded, self.model, self.version)
            status = await self._forward(scope, protocol, inputs.canonical(decoded.doc, protocol, rows, self.cfg), answer)
            reason = "served" if status < 400 else "invalid_input" if status < 500 else "error"
            if status < 400:
                self.drift.observe(rows)  # drift is about what the model actually scored
            else:
                REJECTED.labels(self.model, reason).inc()
        except Exception as e:  # never a dropped connection, never a traceback or a value in the log
            status, reason = 500, "error"
            log.error("serve: internal error (%s) on a request with input_sha256 %s", type(e).__name__, digest or "-")
            if not replied:
                await _reply(send_on, 500, {"error": "internal error"})
        finally:
            elapsed = time.perf_counter() - started
            REQUESTS.labels(self.model, str(status)).inc()
            LATENCY.labels(self.model).observe(elapsed)
            self._audit(client, digest, status, reason, elapsed, flagged)

    def _psi_of(self, feature: str) -> Callable[[], float]:
        return lambda: self.drift.psi()[feature]

    @staticmethod
    def monitors(cfg: ModelConfig) -> dict[str, Any]:
        """Built before the server starts (Starlette builds middleware lazily, at the first request),
        so a model without a usable training profile fails at start-up, not on a request."""
        if not cfg.profile:
            raise ValueError("the model carries no training profile: retrain it with this version of mlsec")
        return {"extraction": ExtractionMonitor(cfg.profile, cfg.features), "drift": DriftMonitor(cfg.profile, cfg.features)}

    async def _forward(self, scope: Scope, protocol: str, body: bytes, send: Send) -> int:
        """Runs the model on the validated body; a 5xx from it goes out as a bare "internal error"."""
        sent = False
        status = 500
        # The model sees the canonical body with canonical headers (kserve compares media types case-sensitively),
        # on the unversioned path (kserve refuses versions).
        replaced = {b"content-length", b"content-type", b"content-encoding", oip.BINARY_HEADER.encode()}
        path = f"/v1/models/{self.model}:predict" if protocol == "v1" else f"/v2/models/{self.model}/infer"
        scope = {**scope, "path": path, "raw_path": path.encode(),
                 "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in replaced]
                 + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status >= 500:
                    log.error("serve: the model failed (status %d)", status)
                    await _reply(send, status, {"error": "internal error"})
                    return
            elif status >= 500:
                return  # the model's own error body (it may quote the input) is dropped
            await send(message)

        await self.app(scope, replay, capture)
        return status

    def _audit(self, client: str | None, digest: str, status: int, reason: str, elapsed: float,
               flagged: str | None) -> None:
        entry = {"time": time.time(), "client": client or "anonymous", "model": self.model,
                 "input_sha256": digest or None, "status": status, "decision": reason,
                 "latency_ms": round(elapsed * 1000, 3)}
        if flagged:
            entry["flagged"] = flagged
        line = json.dumps(entry, sort_keys=True)
        if self._audit_file is not None:
            self._audit_file.write(line + "\n")  # line-buffered: each request's line is on disk when it ends
        else:
            print(line, flush=True)
        if flagged:
            log.warning("serve: client %s flagged: %s", client, flagged)


def _presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


def _body_deadline(when: float) -> asyncio.Timeout:
    """The body read's deadline on the loop's clock: past it, a TimeoutError (slowloris). uvicorn bounds the
    idle time between requests only, never a request whose body is still arriving."""
    return asyncio.timeout_at(when)


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes the limit (a lying Content-Length changes nothing)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _reply(send: Send, status: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
