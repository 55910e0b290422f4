"""Controls tested in-process: extraction targets and decaying flags, the rate limit's window, the guard's
500 path, non-finite scores, and verify-then-load of the same bytes while an attacker swaps the weights."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from limits import parse
from safetensors.torch import load_file, save_file

from mlsec.serve import auth, inputs
from mlsec.serve.guard import REQUESTS, Guard, GuardConfig
from mlsec.serve.model import SignedModel
from mlsec.serve.monitor import ExtractionMonitor
from mlsec.serve.ratelimit import MovingWindow
from mlsec.sign import keys

from conftest import REPO, Signed
from serve_support import GOOD

_spec = importlib.util.spec_from_file_location("bench_extraction", REPO / "benchmarks" / "bench_extraction.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_extraction"] = bench
_spec.loader.exec_module(bench)


def test_extraction_targets_on_a_small_replay() -> None:
    prof, features, holdout = bench.setup()
    flagged, rows = bench.legit(ExtractionMonitor(prof, features), holdout, clients=20, requests=(10, 60))
    assert rows > 5000 and flagged <= 1
    assert (bench.sweep(ExtractionMonitor(prof, features), budget=2000) or 10**9) <= 2000


def test_a_flag_decays_and_small_samples_are_not_judged() -> None:
    prof, features, holdout = bench.setup()
    mon = ExtractionMonitor(prof, features, window_s=60, hold_s=120, min_queries=100)
    sweep = np.random.default_rng(0).uniform(bench.SWEEP_LOW, bench.SWEEP_HIGH, size=(150, 6)).tolist()
    assert mon.observe("c", sweep[:99], now=0.0) is None  # below the minimum sample: not judged
    assert mon.observe("c", sweep[99:], now=1.0) and mon.is_flagged("c", now=1.0)
    assert mon.observe("c", holdout[:5].tolist(), now=100.0)  # still held
    assert mon.observe("c", holdout[5:10].tolist(), now=122.0) is None and not mon.is_flagged("c", now=122.0)
    assert "c" not in mon.flagged


def test_rate_limit_is_a_moving_window_per_client_and_limit_and_starts_no_thread() -> None:
    limiter, rate, strict = MovingWindow(max_keys=4), parse("3/second"), parse("1/second")
    threads = threading.active_count()
    assert [limiter.hit(rate, "m", "a", now=t) for t in (0.0, 0.1, 0.2, 0.3)] == [True, True, True, False]
    assert limiter.hit(rate, "m", "b", now=0.3)  # another client has its own window
    assert limiter.hit(strict, "m", "a", now=0.3)  # and so has another limit (a flagged client's)
    assert not limiter.hit(rate, "m", "a", now=1.0)  # the hit at 0.0 is still inside [0.0, 1.0]
    assert limiter.hit(rate, "m", "a", now=1.0001) and not limiter.hit(rate, "m", "a", now=1.0002)
    assert threading.active_count() == threads  # limits' MemoryStorage started a timer thread per hit
    for c in "cdefgh":  # past max_keys, keys are forgotten (idle ones first): the table stays bounded
        limiter.hit(rate, "m", c, now=5.0)
    assert len(limiter._hits) <= 4
    assert [limiter.hit(rate, "m", "h", now=5.1 + i / 10) for i in range(3)] == [True, True, False]  # h was kept


def _guard(model: SignedModel, app: Any) -> tuple[Guard, str]:
    key = "mlsec_test"
    keys = auth.ApiKeys({"c": {"hash": auth._hash(key), "models": ["*"]}})
    return Guard(app, model="credit", cfg=model.cfg, keys=keys, settings=GuardConfig(audit_log=None),
                 **Guard.monitors(model.cfg)), key


def _call(guard: Guard, body: bytes, key: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/models/credit:predict", "client": ("127.0.0.9", 1),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode()),
                         (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture(scope="module")
def model(signed: Signed, key_pair: keys.KeyPair) -> SignedModel:
    m = SignedModel("credit", signed.bundle, key_pair.public_key)
    m.load()
    return m


def test_an_unexpected_exception_is_a_logged_counted_500(model: SignedModel, caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom 123-45-6789")

    async def leaky(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "value 123-45-6789 broke it"}'})

    body = b'{"instances": [' + str(GOOD).replace("'", '"').encode() + b"]}"
    before = REQUESTS.labels("credit", "500")._value.get()
    with caplog.at_level(logging.INFO):
        for app in (broken, leaky):
            guard, key = _guard(model, app)
            status, reply = _call(guard, body, key)
            assert status == 500 and reply == b'{"error": "internal error"}'
    assert REQUESTS.labels("credit", "500")._value.get() == before + 2
    assert "internal error (RuntimeError)" in caplog.text
    logged = caplog.text + capsys.readouterr().out  # the audit lines went to stdout
    assert "123-45-6789" not in logged and "Traceback" not in logged and '"status": 500' in logged


def test_a_non_finite_score_is_an_error_never_null(model: SignedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "net", lambda x: torch.full((x.shape[0],), float("nan")))
    with pytest.raises(inputs.OutOfRange, match="no finite score"):
        model.predict({"instances": [GOOD]})


def _tensor_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode() + t.numpy().tobytes())
    return h.hexdigest()


def test_load_verifies_and_loads_the_same_bytes_while_weights_are_swapped(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    bundle = Path(shutil.copytree(signed.bundle, tmp_path / "b"))
    weights = bundle / "model" / "model.safetensors"
    signed_bytes = weights.read_bytes()
    evil = {k: v + 1.0 if v.is_floating_point() else v for k, v in load_file(weights).items()}
    save_file(evil, tmp_path / "evil.safetensors")
    evil_bytes = (tmp_path / "evil.safetensors").read_bytes()
    reference = SignedModel("credit", signed.bundle, key_pair.public_key)
    reference.load()
    good = _tensor_digest(reference.net)

    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            tmp = weights.with_name(f".swap{i % 2}")
            tmp.write_bytes(evil_bytes if i % 2 == 0 else signed_bytes)
            os.replace(tmp, weights)  # atomic: each open sees one whole file, signed or not
            i += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes = []
    try:
        for _ in range(25):
            m = SignedModel("credit", bundle, key_pair.public_key)
            try:
                m.load()
                outcomes.append(_tensor_digest(m.net))
            except ValueError as e:
                assert "verification failed" in str(e) or "not a regular file" in str(e) or "symlink" in str(e), e
                outcomes.append("refused")
            except FileNotFoundError:
                outcomes.append("refused")  # a swap's temporary name vanished mid-copy
    finally:
        stop.set()
        swapper.join()
    loaded = [o for o in outcomes if o != "refused"]
    assert all(o == good for o in loaded), "a load served weights other than the signed ones"
    # The private copy also refuses a symlinked file instead of following it.
    weights.unlink()
    weights.symlink_to(tmp_path / "evil.safetensors")
    with pytest.raises(ValueError, match="symlink"):
        SignedModel("credit", bundle, key_pair.public_key).load()


def test_a_websocket_upgrade_reaches_no_app(model: SignedModel) -> None:
    """The guard authenticates, limits and audits HTTP; a websocket scope skipped all of it and went to the app
    (kserve has no websocket route today, so Starlette refused it: by luck, not by the guard)."""
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    guard, _ = _guard(model, app)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    scope = {"type": "websocket", "path": "/v1/models/credit:predict", "client": ("127.0.0.9", 1), "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
