"""Hostile requests played as an attacker would: raw HTTP over sockets to the running server.

Every payload gets a 4xx naming the field (never the value), on ONE keep-alive connection that keeps
working; nothing reaches the log or /metrics as a traceback, a raw value or a status "0"; bad keys
lock the address out; V2 per-feature and nested-data sweeps are flagged like a V1 sweep; a body
dribbled a byte at a time (slowloris) is cut off at the body deadline while others are served, and so
is a connection that sends nothing, its headers a byte at a time, or the body of a refused request.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from mlsec.sign import keys

from conftest import Signed
from serve_support import GOOD, V1, V2, Running, post, read_response, start

SSN = "123-45-6789"
SWEEP_LOW, SWEEP_HIGH = [18, 0, 0, 0, 0, 0], [120, 5e6, 5e6, 100, 200, 1]
CLIENTS = ["alice", "sweep-v1", "sweep-columns", "sweep-nested", "steady", "slow"]
BODY_TIMEOUT = HEAD_TIMEOUT = 2.0
IDLE_TIMEOUT = 10  # longer than any pause between requests on one connection in these tests
HEADLESS = "127.0.0.3"  # the head-deadline test's own address: its unauthenticated requests count toward a lockout


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("hostile"), signed.bundle, key_pair.public_key, CLIENTS,
                    rate="1000/second", max_bad_keys=5, lockout_s=120.0, body_timeout_s=BODY_TIMEOUT,
                    head_timeout_s=HEAD_TIMEOUT, idle_timeout_s=IDLE_TIMEOUT)
    yield running
    running.stop()


def _v1(**values: Any) -> str:
    """A V1 body with raw JSON literals for some features (what json.dumps cannot write)."""
    fields = {**{k: json.dumps(v) for k, v in GOOD.items()}, **values}
    return '{"instances": [{' + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}]}"


def _v2_int64(literal: str) -> str:
    data = ", ".join([literal] + ["1"] * 5)
    return '{"inputs": [{"name": "input", "shape": [1, 6], "datatype": "INT64", "data": [' + data + "]}]}"


# (path, body, extra headers, expected status, text the error must name, raw text it must not hold)
HOSTILE: list[tuple[str, str | bytes, dict[str, str | bytes], int, str, str]] = [
    (V1, _v1(income="1" + "0" * 400), {}, 422, "instances[0].income", "0" * 50),
    (V1, _v1(income="9" * 5000), {}, 422, "instances[0].income", "9" * 50),
    (V1, "[" * 20000, {}, 400, "nests deeper", "[["),
    (V1, '{"instances": ' + "[" * 20000 + "]" * 20000 + "}", {}, 400, "nests deeper", "[["),
    (V2, _v2_int64("1" + "0" * 400), {}, 422, "inputs[input][0].age", "0" * 50),
    (V2, _v2_int64("-" + "9" * 5000), {}, 422, "inputs[input][0].age", "9" * 50),
    (V1, _v1(income="3.5e38"), {}, 422, "instances[0].income", "3.5e38"),
    (V1, _v1(income="1e308"), {}, 422, "instances[0].income", "1e308"),
    (V1, _v1(income="1e999"), {}, 422, "instances[0].income", "1e999"),
    (V1, _v1(income="-Infinity"), {}, 422, "instances[0].income", "Infinity"),
    (V1, _v1(age="NaN"), {}, 422, "instances[0].age", "NaN"),
    (V1, _v1(income=json.dumps(SSN)), {}, 400, "instances[0].income must be a number", SSN),
    (V1, _v1(age="7"), {}, 422, "instances[0].age is outside the data contract range", "=7"),
    (V1, json.dumps({"instances": [{**GOOD, SSN: 1}]}), {}, 400, "unknown features", SSN),
    (V1, b'{"instances": [{"age": "\xff"}]}', {}, 400, "not valid UTF-8 JSON", "\\xff"),
    (V1, json.dumps({"instances": [GOOD]}), {"Content-Type": "text/json"}, 415, "content-type", ""),
    (V1, json.dumps({"instances": [GOOD]}), {"Content-Type": "application/json; charset=latin-1"}, 415, "charset", ""),
]


def test_hostile_payloads_on_one_keep_alive_connection(srv: Running) -> None:
    conn = srv.connect()
    key = srv.keys["alice"]
    for path, body, headers, expected, names, raw in HOSTILE:
        status, doc = post(conn, path, body, key, **headers)
        assert status == expected, (body[:80], status, doc)
        assert names in doc["error"] and (not raw or raw not in doc["error"]), doc
    # A non-UTF-8 header byte, without a key: a 401 with its audit line, not a 500 before authentication.
    assert not srv.wait_audit(status=401) and not srv.wait_audit(status=500)
    assert post(conn, V1, json.dumps({"instances": [GOOD]}), None, **{"X-Foo": b"\xff"})[0] == 401
    assert srv.wait_audit(status=401, client="anonymous", decision="unauthenticated")
    # ... and with a key it is just a header. Media types are case-insensitive, with parameters.
    ok_types = ["Application/JSON", "application/json; charset=UTF-8", 'APPLICATION/json;charset="utf-8"']
    for content_type in ok_types:
        status, doc = post(conn, V1, json.dumps({"instances": [GOOD]}), key, **{"Content-Type": content_type,
                                                                              "X-Foo": b"\xff"})
        assert status == 200, (content_type, doc)
    # The same connection still serves a valid prediction: nothing above reset it.
    status, doc = post(conn, V2, {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP64",
                                              "data": [GOOD[f] for f in srv.features]}]}, key)
    assert status == 200 and {o["name"] for o in doc["outputs"]} == {"label", "probability"}
    conn.close()
    metrics = requests.get(f"http://127.0.0.1:{srv.port}/metrics", timeout=5).text
    statuses = set(re.findall(r'mlsec_requests_total\{model="credit",status="(\d+)"\}', metrics))
    assert "0" not in statuses and not any(s.startswith("5") for s in statuses), statuses
    log = srv.log.read_text()
    assert "Traceback" not in log and SSN not in log and "0" * 50 not in log and "9" * 50 not in log, log[-2000:]


def test_the_float32_edge_is_a_finite_prediction_or_a_422(srv: Running) -> None:
    # The largest income the contract and float32 allow: a finite probability, or the model's refusal
    # of a non-finite score as a 422, never a null probability with a label.
    conn = srv.connect()
    edge = {**GOOD, "income": 3.4e38}
    status, doc = post(conn, V1, {"instances": [edge]}, srv.keys["alice"])
    assert status in (200, 422), doc
    if status == 200:
        assert all(isinstance(p["probability"], float) for p in doc["predictions"])
    else:
        assert "no finite score" in doc["error"]
    assert post(conn, V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    conn.close()


def test_bad_keys_lock_the_address_out_before_key_lookup(srv: Running) -> None:
    conn = srv.connect("127.0.0.2")  # its own source address: the lockout is per address
    codes = [post(conn, V1, {"instances": [GOOD]}, f"mlsec_guess{i}")[0] for i in range(60)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
    # Locked out: even the right key is refused from this address, without being looked up ...
    assert post(conn, V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 429
    conn.close()
    # ... while other addresses are served.
    other = srv.connect("127.0.0.1")
    assert post(other, V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    other.close()
    locked = [line for line in srv.audit_lines() if line["decision"] == "locked_out"]
    assert len(locked) >= 55


def _sweep(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.uniform(SWEEP_LOW, SWEEP_HIGH, size=(n, 6))
    rows[:, [0, 3, 4]] = np.round(rows[:, [0, 3, 4]])
    return rows


def _flagged(srv: Running, client: str) -> list[str]:
    return [line["flagged"] for line in srv.audit_lines() if line["client"] == client and "flagged" in line]


@pytest.mark.parametrize(("client", "shape"), [("sweep-v1", "v1"), ("sweep-columns", "columns"),
                                               ("sweep-nested", "nested")])
def test_sweeps_are_flagged_in_every_request_shape(srv: Running, client: str, shape: str) -> None:
    conn = srv.connect()
    for batch in range(4):
        rows = _sweep(50, seed=batch)
        if shape == "v1":
            path, body = V1, {"instances": [dict(zip(srv.features, map(float, r))) for r in rows]}
        elif shape == "columns":
            path, body = V2, {"inputs": [{"name": f, "shape": [len(rows)], "datatype": "FP64",
                                          "data": rows[:, i].tolist()} for i, f in enumerate(srv.features)]}
        else:
            path, body = V2, {"inputs": [{"name": "input", "shape": [len(rows), 6], "datatype": "FP64",
                                          "data": rows.tolist()}]}
        status, doc = post(conn, path, body, srv.keys[client])
        assert status in (200, 429), doc
    conn.close()
    flags = _flagged(srv, client)
    assert flags and "input-space sweep" in flags[-1], (client, flags)


def test_a_steady_client_scoring_real_applicants_is_not_flagged(srv: Running) -> None:
    import pandas as pd

    from mlsec.config import sample_dataset

    df = pd.read_csv(sample_dataset())
    conn = srv.connect()
    rows = df[srv.features].tail(800).to_numpy()
    for first in range(0, 800, 256):  # full batches, and one applicant scored over and over
        batch = [dict(zip(srv.features, map(float, r))) for r in rows[first:first + 256]]
        assert post(conn, V1, {"instances": batch}, srv.keys["steady"])[0] == 200
    same = [dict(zip(srv.features, map(float, rows[0])))] * 256
    assert post(conn, V1, {"instances": same}, srv.keys["steady"])[0] == 200
    conn.close()
    assert not _flagged(srv, "steady")


def test_error_bodies_name_no_value_in_the_audit_or_log(srv: Running) -> None:
    text = srv.audit.read_text() + srv.log.read_text()
    assert SSN not in text and "3.5e38" not in text and "Traceback" not in text


def _slow_post(srv: Running, body: bytes, pieces: list[bytes], pause: float, until: float) -> tuple[bytes, float, int, bool]:
    """Raw socket: the headers, then the body's pieces `pause` seconds apart. Returns what came back, when the
    reply began, how many body bytes were sent, and whether the server closed the connection (read until
    then, or `until` seconds; a 200 is not waited on past its first bytes)."""
    head = (f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nAuthorization: Bearer {srv.keys['slow']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reply, sent, answered, closed = b"", 0, float("inf"), False
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(head)
        started = time.monotonic()
        s.settimeout(pause)
        while time.monotonic() - started < until and not reply.startswith(b"HTTP/1.1 200"):
            if pieces and not reply:
                try:
                    s.sendall(pieces[0])
                except OSError:  # the server closed the connection
                    closed = True
                    break
                sent += len(pieces.pop(0))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                closed = True
                break
            answered = min(answered, time.monotonic() - started)
            reply += chunk
    return reply, answered, sent, closed


def test_a_dribbled_body_is_cut_off_at_the_deadline_while_others_are_served(srv: Running) -> None:
    body = json.dumps({"instances": [GOOD]}).encode()
    served: list[int] = []
    other = srv.connect()

    def serve_others() -> None:
        while len(served) < 5:
            served.append(post(other, V1, {"instances": [GOOD]}, srv.keys["alice"])[0])
            time.sleep(0.2)

    others = threading.Thread(target=serve_others)
    others.start()
    # Slowloris: a byte every 0.2 s would take half a minute for this body.
    reply, answered, sent, closed = _slow_post(srv, body, [body[i:i + 1] for i in range(len(body))], 0.2, 8.0)
    others.join(timeout=30)
    other.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within 2s" in reply, reply[:300]
    assert closed and sent < len(body)
    assert BODY_TIMEOUT <= answered < BODY_TIMEOUT + 1.5, answered  # at the deadline
    assert served == [200] * 5  # served meanwhile: nobody waited on the dribbler
    assert srv.wait_audit(client="slow", status=408, decision="body_timeout")
    # A body in a few pieces that is complete within the deadline is served as usual.
    reply, _, sent, _ = _slow_post(srv, body, [body[:40], body[40:80], body[80:]], 0.4, 5.0)
    assert reply.startswith(b"HTTP/1.1 200") and sent == len(body), reply[:300]


def _dribble(srv: Running, first: bytes, then: bytes, until: float) -> tuple[bytes, float]:
    """Raw socket: sends `first`, then `then` a byte every 0.2 s. Returns what came back and when (seconds
    after `first`) the server closed the connection (inf: still open at `until`)."""
    reply = b""
    with socket.create_connection((srv.host, srv.port), timeout=10, source_address=(HEADLESS, 0)) as s:
        s.sendall(first)
        started, rest = time.monotonic(), list(then)
        s.settimeout(0.2)
        while time.monotonic() - started < until:
            try:
                if rest:
                    s.sendall(bytes([rest.pop(0)]))
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return reply, time.monotonic() - started
            if not chunk:
                return reply, time.monotonic() - started
            reply += chunk
    return reply, float("inf")


def test_connections_holding_no_complete_head_are_closed_at_the_deadline(srv: Running) -> None:
    served = post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0]
    body = json.dumps({"instances": [GOOD]}).encode()
    head = f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nContent-Type: application/json\r\n".encode()
    # Nothing at all; then headers a byte at a time (a few hundred bytes would take a minute).
    for first, then in ((b"", b""), (head[:10], head[10:] + b"X-Pad: " + b"a" * 300)):
        reply, closed = _dribble(srv, first, then, 8.0)
        assert reply == b"" and HEAD_TIMEOUT <= closed < HEAD_TIMEOUT + 1.5, (first, reply[:200], closed)
    # Refused before its body is read (no key: 401), then the body dribbled: uvicorn would discard the bytes
    # and keep the connection open as long as they come.
    refused = head + f"Content-Length: {len(body) + 300}\r\n\r\n".encode()
    reply, closed = _dribble(srv, refused, body + b" " * 300, 8.0)
    assert reply.startswith(b"HTTP/1.1 401") and HEAD_TIMEOUT <= closed < HEAD_TIMEOUT + 1.5, (reply[:200], closed)
    # A head that begins in the same write as a whole request (pipelined), refused or served, has the deadline
    # too: nothing after it restarts a clock.
    key = srv.keys["alice"]
    served_head = head + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    for whole, status in ((refused + body + b" " * 300, b"401"), (served_head + body, b"200")):
        reply, closed = _dribble(srv, whole + head[:10], b"", 8.0)
        assert reply.startswith(b"HTTP/1.1 " + status) and HEAD_TIMEOUT <= closed < HEAD_TIMEOUT + 1.5, (reply[:200], closed)
    # ... but a refused request's body that arrives whole after the response is not a head in progress: the
    # connection then idles like any other (a client sends headers and body in separate writes; on a loaded
    # server the response can go out between them): served after the head deadline, closed at the idle timeout.
    idle = socket.create_connection((srv.host, srv.port), timeout=IDLE_TIMEOUT + 5, source_address=(HEADLESS, 0))
    with socket.create_connection((srv.host, srv.port), timeout=10, source_address=(HEADLESS, 0)) as s:
        for conn in (idle, s):
            conn.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode())
            assert read_response(conn).startswith(b"HTTP/1.1 401")
            if conn is idle:  # read before its body is sent: the server cannot start the idle clock earlier
                went_idle = time.monotonic()
            conn.sendall(body)
        time.sleep(HEAD_TIMEOUT + 0.5)
        s.sendall(served_head + body)
        assert read_response(s).startswith(b"HTTP/1.1 200")
    with idle:
        assert idle.recv(1) == b""
    assert IDLE_TIMEOUT <= time.monotonic() - went_idle < IDLE_TIMEOUT + 1.5
    # A kept-alive connection between requests, and a connection that sends its request at once, are served.
    assert served == 200
    conn = srv.connect()
    assert [post(conn, V1, {"instances": [GOOD]}, srv.keys["alice"])[0] for _ in range(2)] == [200, 200]
    assert conn.sock is not None
    local = conn.sock.getsockname()
    time.sleep(HEAD_TIMEOUT + 0.5)  # idle after a response: uvicorn's keep-alive timeout governs, not the head's
    assert post(conn, V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    assert conn.sock is not None and conn.sock.getsockname() == local  # the same connection, not a reconnect
    conn.close()
