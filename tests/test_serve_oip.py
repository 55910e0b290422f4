"""Stock inference clients against the running guarded server: tritonclient's HTTP client and KServe's
InferenceRESTClient build their requests from the served metadata, over the same API key, and get the
same probabilities over V1 (rows as objects or lists), OIP JSON and OIP binary tensors.

Hostile variants of the new paths (binary tensors with lying sizes, NaN, bad header lengths,
compression, unknown parameters) are played over raw HTTP in tests/test_serve_oip_hostile.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from mlsec.config import sample_dataset
from mlsec.serve import auth
from mlsec.sign import keys
from mlsec.sign import stage as signing

from conftest import Signed
from serve_support import V1, V2, Running, post, read_response, start

ROWS = 5


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("oip")
    bob = auth.create(tmp / "keys.json", "bob", ["fraud"])  # a valid key, for another model
    running = start(tmp, signed.bundle, key_pair.public_key, ["alice", "kserve", "sweeper"], rate="1000/second")
    running.keys["bob"] = bob
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows(srv: Running) -> np.ndarray:
    return pd.read_csv(sample_dataset())[srv.features].sample(ROWS, random_state=7).to_numpy(dtype=np.float64)


def _auth(srv: Running, client: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.keys[client]}"}


def _v1(srv: Running, rows: np.ndarray) -> list[float]:
    """The reference: V1 with rows as lists in the advertised feature order."""
    status, doc = post(srv.connect(), V1, {"instances": rows.tolist()}, srv.keys["alice"])
    assert status == 200, doc
    return [p["probability"] for p in doc["predictions"]]


def _triton(srv: Running) -> Any:
    import tritonclient.http as triton

    return triton.InferenceServerClient(url=f"{srv.host}:{srv.port}", connection_timeout=10, network_timeout=10)


def test_list_rows_and_keyed_rows_give_the_same_answer(srv: Running, rows: np.ndarray) -> None:
    keyed = [dict(zip(srv.features, r)) for r in rows.tolist()]
    status, doc = post(srv.connect(), V1, {"instances": keyed}, srv.keys["alice"])
    assert status == 200 and [p["probability"] for p in doc["predictions"]] == _v1(srv, rows)
    # Mixed in one batch, too.
    status, doc = post(srv.connect(), V1, {"instances": [keyed[0], rows[1].tolist()]}, srv.keys["alice"])
    assert status == 200 and len(doc["predictions"]) == 2


def test_tritonclient_metadata_lists_every_input_and_output(srv: Running, signed: Signed,
                                                            key_pair: keys.KeyPair) -> None:
    meta = _triton(srv).get_model_metadata("credit", headers=_auth(srv))
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, len(srv.features)]}
    assert [i["name"] for i in meta["inputs"][1:]] == srv.features  # the feature order V1 list rows use
    assert all(inputs[f]["shape"] == [-1] and inputs[f]["datatype"] == "FP32" for f in srv.features)
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probability": ("FP32", [-1]), "label": ("INT64", [-1])}
    assert meta["versions"] == [signing.verify(signed.bundle, key_pair.public_key).model_digest]
    server = _triton(srv).get_server_metadata()  # public, like the probes
    assert server["extensions"] == ["binary_tensor_data"]
    assert _triton(srv).is_model_ready("credit") and _triton(srv).is_server_live()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("form", ["batch", "columns"])
def test_tritonclient_infer_from_metadata_equals_v1(srv: Running, rows: np.ndarray, binary: bool, form: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import triton_to_np_dtype

    client = _triton(srv)
    meta = client.get_model_metadata("credit", headers=_auth(srv))
    wanted = ["input"] if form == "batch" else srv.features
    tensors = []
    for spec in (i for i in meta["inputs"] if i["name"] in wanted):  # built from the metadata alone
        data = rows if spec["name"] == "input" else rows[:, srv.features.index(spec["name"])]
        shape = [len(rows), *spec["shape"][1:]]
        tensors.append(triton.InferInput(spec["name"], shape, spec["datatype"]).set_data_from_numpy(
            data.astype(triton_to_np_dtype(spec["datatype"])), binary_data=binary))
    outputs = None if binary else [triton.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
    result = client.infer("credit", tensors, outputs=outputs, request_id="req-7", headers=_auth(srv))
    np.testing.assert_array_equal(result.as_numpy("probability"), np.float32(_v1(srv, rows)))
    assert result.as_numpy("label").dtype == np.int64 and len(result.as_numpy("label")) == len(rows)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == meta["versions"][0]
    assert all(("data" in o) != binary for o in response["outputs"])  # binary outputs unless JSON was asked for


@pytest.mark.parametrize("datatype", ["FP64", "INT64"])
def test_tritonclient_binary_fp64_and_int64(srv: Running, rows: np.ndarray, datatype: str) -> None:
    import tritonclient.http as triton

    data = rows if datatype == "FP64" else np.round(rows).astype(np.int64)
    tensor = triton.InferInput("input", list(data.shape), datatype).set_data_from_numpy(data)
    result = _triton(srv).infer("credit", [tensor], headers=_auth(srv),
                                model_version=_triton(srv).get_model_metadata("credit", headers=_auth(srv))["versions"][0])
    np.testing.assert_array_equal(result.as_numpy("probability"), np.float32(_v1(srv, data.astype(np.float64))))


def test_tritonclient_errors_are_exceptions_with_status_and_message(srv: Running, rows: np.ndarray) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = _triton(srv)
    bad = rows.astype(np.float32)
    bad[0, 1] = np.nan
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"inputs": [triton.InferInput("input", list(bad.shape), "FP32").set_data_from_numpy(bad)]}, "422",
         "inputs[input][0].income must be a finite number"),
        ({"inputs": [triton.InferInput("input", [len(rows), 5], "FP32").set_data_from_numpy(bad[:, :5])]}, "400",
         'input "input" must have shape [N, 6]'),
        ({"inputs": [triton.InferInput("input", list(rows.shape), "FP32").set_data_from_numpy(rows.astype(np.float32))],
          "priority": 3}, "400", "parameters: unsupported ['priority']"),
        ({"inputs": [triton.InferInput("input", list(rows.shape), "FP32").set_data_from_numpy(rows.astype(np.float32))],
          "headers": {"Authorization": "Bearer mlsec_wrong"}}, "401", "missing or invalid API key"),
    ]
    for kwargs, status, message in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer("credit", **{"headers": _auth(srv), **kwargs})
        assert err.value.status() == status and message in err.value.message(), (status, err.value)
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("credit")  # no key
    assert err.value.status() == "401"


def test_kserve_rest_client_v1_and_v2_agree(srv: Running, rows: np.ndarray) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    base, headers = f"http://{srv.host}:{srv.port}", _auth(srv, "kserve")

    async def ask() -> tuple[dict[str, Any], Any, Any]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            a = await v1.infer(base, {"instances": rows.tolist()}, model_name="credit", headers=headers)
            as_json = InferInput("input", list(rows.shape), "FP32")
            as_json.set_data_from_numpy(rows.astype(np.float32), binary_data=False)
            b = await v2.infer(base, InferRequest("credit", [as_json]), model_name="credit", headers=dict(headers))
            as_binary = InferInput("input", list(rows.shape), "FP64")
            as_binary.set_data_from_numpy(rows, binary_data=True)
            c = await v2.infer(base, InferRequest("credit", [as_binary], parameters={"binary_data_output": True}),
                               model_name="credit", headers=dict(headers))
            return a, b, c
        finally:
            await v1.close()
            await v2.close()

    v1_answer, v2_json, v2_binary = asyncio.run(ask())
    expected = np.float32([p["probability"] for p in v1_answer["predictions"]])
    for answer in (v2_json, v2_binary):
        outputs = {o.name: o.as_numpy() for o in answer.outputs}
        np.testing.assert_array_equal(outputs["probability"].astype(np.float32), expected)
        assert outputs["label"].tolist() == [p["label"] for p in v1_answer["predictions"]]


@pytest.mark.parametrize(("path", "client", "status"), [
    ("/v2/models/credit", None, 401), ("/v2/models/credit", "bob", 403), ("/v2/models/credit", "alice", 200),
    ("/openapi.json", None, 401), ("/openapi.json", "alice", 200),
    ("/v2/models/credit/versions/not-this-one", "alice", 404),
    ("/v2", None, 200), ("/v2/models/credit/ready", None, 200), ("/v1/models/credit", None, 200),
])
def test_what_describes_the_model_needs_its_key(srv: Running, path: str, client: str | None, status: int) -> None:
    headers = _auth(srv, client) if client else {}
    r = requests.get(f"http://{srv.host}:{srv.port}{path}", headers=headers, timeout=5)
    assert r.status_code == status, r.text
    if status >= 400:
        assert set(r.json()) == {"error"}
    if path == "/v2/models/credit" and status in (200, 401, 403):  # counted and audited like inference
        assert srv.wait_audit(status=status, decision={200: "described", 401: "unauthenticated", 403: "forbidden"}[status])


# -- hostile input on the new paths, over raw HTTP ---------------------------------------------------------
def _binary(tensors: list[tuple[dict[str, Any], bytes]], trailing: bytes = b"", **doc: Any) -> tuple[bytes, int]:
    """An OIP binary body: the JSON header, then each tensor's bytes; and the header's length."""
    header = json.dumps({**doc, "inputs": [t for t, _ in tensors]}).encode()
    return header + b"".join(raw for _, raw in tensors) + trailing, len(header)


def _tensor(values: np.ndarray, datatype: str = "FP32", name: str = "input", size: int | None = None,
            shape: list[int] | None = None, **extra: Any) -> tuple[dict[str, Any], bytes]:
    raw = values.astype({"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}.get(datatype, "<f4")).tobytes()
    return ({"name": name, "shape": shape or list(values.shape), "datatype": datatype,
             "parameters": {"binary_data_size": len(raw) if size is None else size}, **extra}, raw)


def _hostile(rows: np.ndarray) -> list[tuple[str, bytes, dict[str, str], int, str]]:
    """(path, body, headers, expected status, what the error must name)."""
    good = rows.astype(np.float32)
    nan, inf = good.copy(), rows.copy()
    nan[1, 2], inf[0, 5] = np.nan, np.inf
    out: list[tuple[str, bytes, dict[str, str], int, str]] = []

    def binary(expected: int, names: str, *tensors: tuple[dict[str, Any], bytes], trailing: bytes = b"",
               length: str | None = None, content_type: str | None = None, **doc: Any) -> None:
        body, n = _binary(list(tensors), trailing, **doc)
        headers = {"Inference-Header-Content-Length": length or str(n)}
        if content_type:
            headers["Content-Type"] = content_type
        out.append((V2, body, headers, expected, names))

    binary(422, "inputs[input][1].loan_amount must be a finite number", _tensor(nan))
    binary(422, "inputs[input][0].debt_to_income must be a finite number", _tensor(inf, "FP64"))
    binary(422, "inputs[input][0].age is outside the data contract range",
           _tensor(np.full(rows.shape, -(2**62), dtype=np.int64), "INT64"))
    binary(400, "binary_data_size 4 is not 30 values of 4 bytes", _tensor(good, size=4))
    binary(400, "binary_data_size 240 is not 30 values of 4 bytes", _tensor(good, size=240))
    binary(400, "the binary data ends before its 120 bytes", (_tensor(good)[0], _tensor(good)[1][:100]))
    binary(400, "7 bytes of binary data belong to no input", _tensor(good), trailing=b"\x00" * 7)
    binary(400, "too many values", _tensor(good, size=4 * 6 * 10**12, shape=[10**12, 6]))
    binary(400, "binary_data_size and data are exclusive", _tensor(good, data=[1.0] * 30))
    binary(400, "binary datatype must be one of", _tensor(good, "BYTES"))
    binary(400, "binary_data_size must be a non-negative integer", _tensor(good, size=-4))
    binary(400, "must be a number", _tensor(good), length="12abc")
    binary(400, "must be a number", _tensor(good), length="9" * 40)
    binary(400, "must be a number", _tensor(good), length="\xb2")  # a digit to str.isdigit(), not to int()
    binary(400, "between 1 and the body's length", _tensor(good), length="99999999")
    binary(400, "between 1 and the body's length", _tensor(good), length="0")
    binary(400, "not valid UTF-8 JSON", _tensor(good), length="5")  # a header cut mid-JSON
    binary(415, "content-type with binary tensor data", _tensor(good), content_type="text/plain")
    binary(400, "parameters: unsupported ['sequence_id']", _tensor(good), parameters={"sequence_id": 1})
    binary(400, "input 'input' parameters: unsupported ['shared_memory_region']",
           (_tensor(good)[0] | {"parameters": {"shared_memory_region": "r"}}, b""))
    binary(400, "outputs must name each of ['probability', 'label'] at most once; got ['logits']", _tensor(good),
           outputs=[{"name": "logits"}])
    binary(400, "output 'label' parameters: unsupported ['classification']", _tensor(good),
           outputs=[{"name": "label", "parameters": {"classification": 2}}])
    binary(400, "id must be a string", _tensor(good), id=7)
    binary(400, "model_name must be 'credit' or absent", _tensor(good), model_name="fraud")
    binary(400, "body: unsupported ['sequence']", _tensor(good), sequence=1)
    json_v2 = json.dumps({"inputs": [_tensor(good)[0]]}).encode()  # binary_data_size without the header
    out.append((V2, json_v2, {"Content-Type": "application/json"}, 400, "needs the inference-header-content-length"))
    out.append((V2, json_v2, {"Content-Type": "application/octet-stream"}, 415, "needs the inference-header"))
    v1 = json.dumps({"instances": rows.tolist()}).encode()
    out.append((V1, v1, {"Content-Encoding": "gzip"}, 415, "content-encoding must be identity"))
    out.append((V1, v1, {"Inference-Header-Content-Length": "10"}, 400, "for V2 inference only"))
    out.append((V1, json.dumps({"instances": [rows[0].tolist()[:5]]}).encode(), {}, 400,
                "instances[0] must list 6 values in the order"))
    out.append((V1, json.dumps({"instances": rows.tolist(), "signature_name": "x"}).encode(), {}, 400,
                "body: unsupported ['signature_name']"))
    out.append((V1, b"instances=1", {"Content-Type": None}, 400, "not valid UTF-8 JSON"))  # type: ignore[dict-item]
    return out


def _raw_post(conn: Any, path: str, body: bytes, key: str, headers: dict[str, str | None]) -> tuple[int, bytes]:
    """POST with exactly these headers (None: the header is not sent at all, not even Content-Type)."""
    conn.putrequest("POST", path, skip_accept_encoding=True)
    sent = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Authorization": f"Bearer {key}",
            **headers}
    if "Inference-Header-Content-Length" in headers and "Content-Type" not in headers:
        del sent["Content-Type"]  # what tritonclient sends
    for k, v in sent.items():
        if v is not None:
            conn.putheader(k, v)
    conn.endheaders(body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_hostile_binary_and_protocol_inputs_are_4xx_naming_the_field(srv: Running, rows: np.ndarray) -> None:
    conn, key = srv.connect(), srv.keys["alice"]
    for path, body, headers, expected, names in _hostile(rows):
        status, raw = _raw_post(conn, path, body, key, headers)
        doc = json.loads(raw)
        assert (status, set(doc)) == (expected, {"error"}), (headers, names, status, doc)
        assert names in doc["error"], (names, doc)
    # JSON without any Content-Type is the protocol's JSON, on both protocols; the connection still works.
    for path, body in ((V1, {"instances": rows.tolist()}),
                       (V2, {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP64",
                                         "data": rows.tolist()}], "id": "no-type", "outputs": [{"name": "label"}]})):
        status, raw = _raw_post(conn, path, json.dumps(body).encode(), key, {"Content-Type": None})
        assert status == 200, raw
    answer = json.loads(raw)
    assert answer["id"] == "no-type" and [o["name"] for o in answer["outputs"]] == ["label"]  # only what was asked
    conn.close()
    served = srv.wait_audit(client="alice", status=422)
    assert served and all(len(e["input_sha256"]) == 64 for e in served)  # binary bodies are audited by digest
    metrics = requests.get(f"http://{srv.host}:{srv.port}/metrics", timeout=5).text
    assert 'status="5' not in metrics and 'status="0"' not in metrics
    assert "Traceback" not in srv.log.read_text()


def _raw(srv: Running, head: bytes, body: bytes = b"", half_close: bool = False, then: bytes = b"") -> list[bytes]:
    """One request over a raw socket (and `then` sent after its answer): what came back for each before the
    server answered or closed. The socket timeout makes a hang a failure."""
    import socket

    answers = []
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        for i, data in enumerate((head + body, then)):
            if i and not data:
                break
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            answers.append(read_response(s))
    return answers


def _head(srv: Running, length: int | str, binary_length: int | str, chunked: bool = False) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n".encode()
    return (f"POST {V2} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.keys['alice']}\r\n"
            f"Inference-Header-Content-Length: {binary_length}\r\n").encode() + framing + b"\r\n"


def test_lying_lengths_over_raw_sockets(srv: Running, rows: np.ndarray) -> None:
    body, n = _binary([_tensor(rows)])
    # A Content-Length past the limit: refused before a byte of the body is read.
    assert _raw(srv, _head(srv, 10**9, n))[0].startswith(b"HTTP/1.1 413")
    # A Content-Length that covers only the JSON header: its tensor's bytes are missing (our 400); the tensor
    # bytes sent after it are not taken for a request (the HTTP parser's 400, then the connection closes).
    ours, stray = _raw(srv, _head(srv, n, n), body[:n], then=body[n:])
    assert ours.startswith(b"HTTP/1.1 400") and b"the binary data ends before its 120 bytes" in ours, ours
    assert stray == b"" or stray.startswith(b"HTTP/1.1 400"), stray[:80]
    # An Inference-Header-Content-Length far past the body, and an oversized chunked body: 400 and 413.
    assert _raw(srv, _head(srv, len(body), 2**62), body)[0].startswith(b"HTTP/1.1 400")
    chunk = b"f" * 60000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
    assert _raw(srv, _head(srv, 0, 100, chunked=True), chunked)[0].startswith(b"HTTP/1.1 413")
    # A body shorter than its Content-Length, then the client stops sending: the server does not wait forever.
    (answer,) = _raw(srv, _head(srv, len(body) + 500, n), body, half_close=True)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
    status, doc = post(srv.connect(), V1, {"instances": rows.tolist()}, srv.keys["alice"])  # still serving
    assert status == 200, doc
    assert "Traceback" not in srv.log.read_text()


def test_a_binary_tensor_sweep_is_flagged_like_a_json_one(srv: Running) -> None:
    import tritonclient.http as triton

    client = _triton(srv)
    rng = np.random.default_rng(5)
    for _ in range(2):  # judged from 100 rows on (ExtractionMonitor.min_queries)
        sweep = rng.uniform([18, 0, 0, 0, 0, 0], [120, 5e6, 5e6, 100, 200, 1], size=(60, 6)).astype(np.float32)
        tensor = triton.InferInput("input", list(sweep.shape), "FP32").set_data_from_numpy(sweep)
        client.infer("credit", [tensor], headers=_auth(srv, "sweeper"))
    def sweep_flagged() -> bool:
        return any("input-space sweep" in e.get("flagged", "") for e in srv.wait_audit(client="sweeper"))

    deadline = time.monotonic() + 5  # each audit line is written just after its response
    while not sweep_flagged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sweep_flagged(), srv.wait_audit(client="sweeper")[-1:]


def test_metadata_is_rate_limited_and_audited_in_process(signed: Signed, capsys: pytest.CaptureFixture[str]) -> None:
    from mlsec.serve.guard import Guard, GuardConfig
    from mlsec.train.model import load

    _, cfg = load(signed.bundle / "model")
    key = "mlsec_test"
    keys = auth.ApiKeys({"c": {"hash": auth._hash(key), "models": ["credit"]}})

    async def model(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("metadata must not reach the model")

    guard = Guard(model, model="credit", cfg=cfg, keys=keys, settings=GuardConfig(rate="2/minute"), version="v1",
                  **Guard.monitors(cfg))

    def get(path: str) -> int:
        sent: list[dict[str, Any]] = []
        scope = {"type": "http", "method": "GET", "path": path, "client": ("127.0.0.9", 1),
                 "headers": [(b"authorization", f"Bearer {key}".encode())]}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(guard(scope, None, send))  # type: ignore[arg-type]
        return int(sent[0]["status"])

    assert [get("/v2/models/credit"), get("/v2/models/credit/versions/v1"), get("/openapi.json")] == [200, 200, 429]
    audit = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["client"], e["decision"]) for e in audit] == [("c", "described"), ("c", "described"),
                                                            ("c", "rate_limited")]
