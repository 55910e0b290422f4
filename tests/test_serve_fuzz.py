"""Fuzzing the server: Hypothesis over the row parser, and schemathesis over the served OpenAPI.

The property tests run in-process on any JSON (and any bytes): the outcome is rows whose scores are
finite, or a BadRequest with a 4xx status; nothing else may escape. The schemathesis run sends
MLSEC_FUZZ_CASES cases (200 in the normal test run; `make fuzz` sends 3,200) over V1 and V2, in
positive and negative generation modes, to the running server and prints how many got a 5xx.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsec.serve import inputs
from mlsec.serve.model import SignedModel
from mlsec.sign import keys

from conftest import Signed
from serve_support import GOOD, Running, start

FEATURES = list(GOOD)
numbers = st.one_of(st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([3.5e38, 1e308, -0.0, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
any_json = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=20)
instance = st.fixed_dictionaries({f: st.one_of(numbers, scalars) for f in FEATURES})
v1_docs = st.one_of(any_json, st.fixed_dictionaries({"instances": st.lists(st.one_of(instance, any_json), max_size=5)}))
datatypes = st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BYTES"])
batch_tensor = st.fixed_dictionaries({"name": st.just("input"), "shape": st.lists(st.integers(-1, 4), max_size=3),
                                      "datatype": datatypes,
                                      "data": st.one_of(st.lists(numbers, max_size=14),
                                                        st.lists(st.lists(numbers, max_size=7), max_size=3))})
column = st.builds(lambda f, n, dt, data: {"name": f, "shape": [n], "datatype": dt, "data": data},
                   st.sampled_from(FEATURES), st.integers(0, 3), datatypes, st.lists(numbers, max_size=3))
v2_docs = st.one_of(any_json, st.fixed_dictionaries({"inputs": st.one_of(st.lists(batch_tensor, max_size=2),
                                                                         st.lists(column, max_size=7))}))
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def model(signed: Signed, key_pair: keys.KeyPair) -> SignedModel:
    m = SignedModel("credit", signed.bundle, key_pair.public_key)
    m.load()
    return m


def _serve(model: SignedModel, body: bytes, protocol: str) -> tuple[int, Any]:
    """What the guard and the model do with a body, minus the HTTP: (status, outcome)."""
    try:
        doc = inputs.parse_json(body)
        rows = inputs.rows(doc, protocol, model.cfg)
        forwarded = json.loads(inputs.canonical(doc, protocol, rows, model.cfg))
        if protocol == "v1":
            return 200, model.predict(forwarded)["predictions"]
        labels, probs = model._score(inputs.rows_v2(forwarded, model.cfg))
        return 200, [{"label": label, "probability": p} for label, p in zip(labels, probs)]
    except inputs.BadRequest as e:
        return e.status, str(e)


def _assert_2xx_or_4xx(status: int, outcome: Any) -> None:
    assert status in (200, 400, 422), (status, outcome)
    if status == 200:
        assert outcome and all(p["label"] in (0, 1) and math.isfinite(p["probability"]) for p in outcome)


@PROPERTY
@given(doc=v1_docs)
def test_any_v1_json_is_a_finite_prediction_or_a_4xx(model: SignedModel, doc: Any) -> None:
    _assert_2xx_or_4xx(*_serve(model, json.dumps(doc).encode(), "v1"))


@PROPERTY
@given(doc=v2_docs)
def test_any_v2_json_is_a_finite_prediction_or_a_4xx(model: SignedModel, doc: Any) -> None:
    _assert_2xx_or_4xx(*_serve(model, json.dumps(doc).encode(), "v2"))


@settings(max_examples=300, deadline=None, database=None)
@given(body=st.one_of(st.binary(max_size=200), st.text(alphabet="[]{}\":,0123456789eE.-+ \\tnaNIfiy", max_size=200)
                      .map(str.encode)))
def test_any_bytes_parse_or_are_a_400(body: bytes) -> None:
    try:
        inputs.parse_json(body)
    except inputs.BadRequest as e:
        assert e.status == 400


def test_depth_is_bounded_without_recursion() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(inputs.BadRequest, match="nests deeper"):
        inputs.parse_json(deep)
    assert inputs.depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == 1  # brackets in strings don't count
    assert inputs.parse_json(b'{"x": ' + b"1" * 5000 + b"}")["x"] == math.inf  # no int digit-limit ValueError


# -- schemathesis over the served OpenAPI -----------------------------------------------------------
CASES = int(os.environ.get("MLSEC_FUZZ_CASES", "200"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("fuzz"), signed.bundle, key_pair.public_key, ["fuzzer"],
                    rate="100000/second")
    yield running
    running.stop()


def test_fuzzing_the_served_openapi_finds_no_5xx(fuzz_server: Running) -> None:
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    base = f"http://127.0.0.1:{fuzz_server.port}"
    auth = {"Authorization": f"Bearer {fuzz_server.keys['fuzzer']}"}
    spec = requests.get(base + "/openapi.json", headers=auth, timeout=5).json()  # it holds the contract ranges
    schema = schemathesis.openapi.from_dict(spec)
    sent: dict[str, int] = {}
    errors: list[str] = []
    started = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        inference = operation.method.upper() == "POST"
        public = operation.definition.raw.get("security") == []  # a probe: no key, no input, nothing to negate
        for mode in (GenerationMode.POSITIVE,) if public else (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            per_mode = max(1, CASES // 4) if inference else 5

            @settings(max_examples=per_mode, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                r = case.call(base_url=base, headers=auth)
                sent[operation.path] = sent.get(operation.path, 0) + 1
                if r.status_code >= 500:
                    errors.append(f"{case.method} {case.path} -> {r.status_code}")

            fuzz()
    inference_cases = sum(n for path, n in sent.items() if path.endswith((":predict", "/infer")))
    print(f"\nfuzz: {sum(sent.values())} cases ({inference_cases} on V1/V2 inference) in "
          f"{time.perf_counter() - started:.0f}s; server errors: {len(errors)}")
    assert inference_cases >= CASES * 0.9, sent
    assert not errors, errors[:5]
    metrics = requests.get(base + "/metrics", timeout=5).text
    assert 'status="5' not in metrics and 'status="0"' not in metrics
    assert "Traceback" not in fuzz_server.log.read_text()
