"""The running server over HTTP: authentication, limits, validation, monitoring, audit, fuzzing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from mlsec.config import sample_dataset
from mlsec.serve import auth
from mlsec.serve.deploy import free_port, wait_ready
from mlsec.sign import keys

from conftest import Signed


@dataclass
class Server:
    url: str
    key: str
    other_key: str
    bob_key: str
    pid: int
    audit: Path
    features: list[str]

    def post(self, path: str, body: Any, key: str | None = None, **headers: str) -> requests.Response:
        hdrs = {"Content-Type": "application/json", **headers}
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + path, data=data, headers=hdrs, timeout=10)


def _start(tmp: Path, signed: Signed, key_pair: keys.KeyPair, rate: str) -> tuple[subprocess.Popen[bytes], Server]:
    port = free_port()
    keyfile = tmp / "keys.json"
    key, other = auth.create(keyfile, "alice", ["credit"]), auth.create(keyfile, "mallory")
    bob = auth.create(keyfile, "bob", ["fraud"])
    audit = tmp / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle", str(signed.bundle),
                             "--public-key", str(key_pair.public_key), "--port", str(port), "--api-keys", str(keyfile),
                             "--rate", rate, "--audit-log", str(audit), "--max-body", "16384"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    assert wait_ready(url, "credit", 60), "model server did not become ready"
    features = json.loads((signed.bundle / "model" / "config.json").read_text())["features"]
    return proc, Server(url, key, other, bob, proc.pid, audit, features)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Server]:
    proc, srv = _start(tmp_path_factory.mktemp("srv"), signed, key_pair, "1000/second")
    yield srv
    proc.terminate()
    proc.wait(timeout=15)


def _instances(n: int, seed: int = 0) -> list[dict[str, float]]:
    df = pd.read_csv(sample_dataset()).sample(n, random_state=seed)
    return [{f: float(r[f]) for f in ("age", "income", "loan_amount", "credit_history_years", "num_late_payments",
                                       "debt_to_income")} for _, r in df.iterrows()]


def test_listens_on_loopback_only(server: Server) -> None:
    import psutil

    proc = psutil.Process(server.pid)
    conns = getattr(proc, "net_connections", None) or proc.connections
    listening = {c.laddr.ip for c in conns(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_v1_and_v2_predictions(server: Server) -> None:
    r = server.post("/v1/models/credit:predict", {"instances": _instances(2)}, server.key)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    row = [_instances(1)[0][f] for f in server.features]
    r = server.post("/v2/models/credit/infer", {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP64",
                                                            "data": row}]}, server.key)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outputs) == {"label", "probability"} and outputs["label"]["datatype"] == "INT64"


@pytest.mark.parametrize(("key", "code"), [(None, 401), ("mlsec_wrong", 401)])
def test_missing_or_bad_credentials_are_401(server: Server, key: str | None, code: int) -> None:
    r = server.post("/v1/models/credit:predict", {"instances": _instances(1)}, key)
    assert r.status_code == code and r.headers["www-authenticate"] == "Bearer"


def test_key_for_another_model_is_403_and_keys_are_stored_hashed(server: Server) -> None:
    assert server.post("/v1/models/credit:predict", {"instances": _instances(1)}, server.bob_key).status_code == 403
    stored = (server.audit.parent / "keys.json").read_text()
    assert all(k not in stored for k in (server.key, server.other_key, server.bob_key))


def test_oversized_body_is_413_and_wrong_content_type_is_415(server: Server) -> None:
    assert server.post("/v1/models/credit:predict", "x" * 20000, server.key).status_code == 413
    r = server.post("/v1/models/credit:predict", "{}", server.key, **{"Content-Type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize("body", [
    b"{not json", '{"instances": [{"age": NaN}]}', {"instances": [{"age": "old"}]}, {"instances": "all"},
    {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "BYTES", "data": ["a"] * 6}]},
    {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP32", "data": [1.0] * 6}]},
])
def test_bad_inputs_are_4xx_never_5xx(server: Server, body: Any) -> None:
    path = "/v2/models/credit/infer" if isinstance(body, dict) and "inputs" in body else "/v1/models/credit:predict"
    r = server.post(path, body, server.key)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_malformed_content_length_is_400(server: Server) -> None:
    import http.client

    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    conn.putrequest("POST", "/v1/models/credit:predict")
    for k, v in (("Content-Type", "application/json"), ("Authorization", f"Bearer {server.key}"),
                 ("Content-Length", "abc")):
        conn.putheader(k, v)
    conn.endheaders()
    assert conn.getresponse().status == 400


def test_unexposed_routes_are_404(server: Server) -> None:
    assert server.post("/v2/repository/models/credit/unload", {}, server.key).status_code == 404
    assert requests.get(server.url + "/docs", timeout=5).status_code == 404
    assert server.post("/v1/models/other:predict", {"instances": []}, server.key).status_code == 404


def test_audit_log_has_one_line_per_request_and_no_raw_input(server: Server) -> None:
    body = {"instances": _instances(1, seed=42)}
    server.post("/v1/models/credit:predict", body, server.key)
    last = json.loads(server.audit.read_text().splitlines()[-1])
    assert last["client"] == "alice" and last["status"] == 200 and last["decision"] == "served"
    assert len(last["input_sha256"]) == 64 and "latency_ms" in last
    assert str(body["instances"][0]["income"]) not in server.audit.read_text()


def test_sweeping_client_is_flagged_and_throttled(server: Server) -> None:
    rng = np.random.default_rng(1)
    sweep = rng.uniform([18, 0, 0, 0, 0, 0], [120, 5e6, 5e6, 100, 200, 1], size=(120, 6))
    instances = [dict(zip(server.features, map(float, row))) for row in sweep]
    # Coverage is judged on at least 100 rows (ExtractionMonitor.min_queries), sent in two batches.
    for half in (instances[:60], instances[60:]):
        assert server.post("/v1/models/credit:predict", {"instances": half}, server.other_key).status_code == 200
    codes = [server.post("/v1/models/credit:predict", {"instances": instances[:1]}, server.other_key).status_code
             for _ in range(5)]
    assert 429 in codes  # throttled to the flagged rate
    flagged = [json.loads(line) for line in server.audit.read_text().splitlines() if "flagged" in line]
    assert flagged and flagged[-1]["client"] == "mallory" and "input-space sweep" in flagged[-1]["flagged"]
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'mlsec_flagged_clients{model="credit"} 1.0' in metrics
    # Ordinary traffic from another client is not affected.
    assert server.post("/v1/models/credit:predict", {"instances": _instances(60)}, server.key).status_code == 200


def test_drift_on_a_shifted_stream_shows_in_metrics(server: Server) -> None:
    shifted = [{**i, "income": i["income"] * 6, "debt_to_income": min(1.0, i["debt_to_income"] * 2.5)}
               for i in _instances(200, seed=3)]
    for start in range(0, 200, 10):
        server.post("/v1/models/credit:predict", {"instances": shifted[start:start + 10]}, server.key)
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    psi = {line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
           for line in metrics.splitlines() if line.startswith("mlsec_feature_drift_psi{")}
    assert psi["income"] > 0.5 and psi["debt_to_income"] > 0.2 and psi["age"] < 0.2


def test_rate_limit_is_429(tmp_path: Path, signed: Signed, key_pair: keys.KeyPair) -> None:
    proc, srv = _start(tmp_path, signed, key_pair, "3/second")
    try:
        codes = [srv.post("/v1/models/credit:predict", {"instances": _instances(1)}, srv.key).status_code
                 for _ in range(8)]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]


def test_fuzzing_the_openapi_finds_no_5xx(server: Server) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    spec = requests.get(server.url + "/openapi.json", headers={"Authorization": f"Bearer {server.key}"}, timeout=5).json()
    assert "/v1/models/credit:predict" in spec["paths"] and "/v2/models/credit/infer" in spec["paths"]
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            r = case.call(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"})
            if r.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {r.status_code}: {r.text[:200]}")

        fuzz()
    assert not failures, failures[:5]
