"""Attacks from a review of the serving changes, played with raw sockets against the running server.

A request head is bounded in size as well as in time: httptools buffers a header value without limit,
so within the head deadline one connection could make the server hold gigabytes (a header bomb).
So is its number of header fields (each costs the server CPU), and the number of pipelined requests
queued behind the one being answered (uvicorn parses and queues every one it has read). A client that
stops reading its responses is reset at the write deadline instead of holding the connection for ever.
Lockouts of addresses that never come back are forgotten once expired (a flood of fresh addresses).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsec.serve.auth import Lockout
from mlsec.sign import keys

from conftest import Signed
from serve_support import GOOD, V1, Running, post, read_response, read_to_close, start

HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, signed: Signed, key_pair: keys.KeyPair) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("review"), signed.bundle, key_pair.public_key, ["alice"],
                    head_timeout_s=HEAD_TIMEOUT, write_timeout_s=WRITE_TIMEOUT)
    yield running
    running.stop()


def _rss_kib(srv: Running) -> int:
    status = open(f"/proc/{srv.proc.pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def _flood(srv: Running, head: bytes, total: int) -> int:
    """Sends `head`, then up to `total` bytes of one header's value as fast as the server takes them;
    returns how many it took before it closed the connection."""
    sent, piece = 0, b"a" * 65536
    with socket.create_connection((srv.host, srv.port), timeout=HEAD_TIMEOUT * 2) as s:
        s.sendall(head)
        try:
            while sent < total:
                s.sendall(piece)
                sent += len(piece)
        except OSError:
            return sent
        time.sleep(0.5)  # let the server parse what it has buffered
    return sent


def test_a_header_bomb_is_cut_off_by_size_not_only_by_the_head_deadline(srv: Running) -> None:
    before = _rss_kib(srv)
    head = f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nX-Pad: ".encode()
    sent = _flood(srv, head, 256 * 1024 * 1024)
    grown_mib = (_rss_kib(srv) - before) / 1024
    assert sent < 8 * 1024 * 1024, f"the server took {sent / 2**20:.0f} MiB of one header, grew {grown_mib:.0f} MiB"
    # Honest requests, one of them with a chunked body in one-byte chunks (framing is not counted as body),
    # are still served.
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
    body = json.dumps({"instances": [GOOD]}).encode()
    chunked = b"".join(b"1\r\n" + bytes([c]) + b"\r\n" for c in body) + b"0\r\n\r\n"
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  f"Authorization: Bearer {srv.keys['alice']}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked)
        reply = read_to_close(s)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_lockouts_of_addresses_that_never_return_do_not_grow_without_bound() -> None:
    lockout = Lockout(max_failures=2, window_s=60.0, lockout_s=10.0, max_addresses=100)
    for i in range(5000):  # fresh addresses, each locked out once and never seen again
        now = i * 0.01
        lockout.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", now)
        lockout.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", now)
    assert len(lockout._until) <= 100
    # A live lockout is kept while the table has room: the last address is still locked out.
    assert lockout.locked("10.0.19.135", 49.99 + 5.0) > 0


def _one_request(srv: Running, extra_headers: int) -> bytes:
    body = json.dumps({"instances": [GOOD]}).encode()
    pad = b"".join(b"x-pad-%d: b\r\n" % i for i in range(extra_headers))
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  f"Authorization: Bearer {srv.keys['alice']}\r\n".encode() + pad
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return read_to_close(s)


def test_a_request_with_too_many_header_fields_is_refused(srv: Running) -> None:
    # 50,000 tiny header lines (under 1 MiB) took the server 50 times a plain request's time to answer.
    refused = _one_request(srv, 101)
    assert refused.startswith(b"HTTP/1.1 400") and refused.endswith(b"more than 100 header fields"), refused[:300]
    assert _one_request(srv, 60).startswith(b"HTTP/1.1 200")


def _server_end(srv: Running, client_port: int) -> tuple[str, int] | None:
    """The state and unread byte count of the server's end of the connection from this client port
    (/proc/net/tcp), or None once the kernel no longer has it."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state, queues = line.split()[1:5]
        if int(local.split(":")[1], 16) == srv.port and int(remote.split(":")[1], 16) == client_port:
            return state, int(queues.split(":")[1], 16)
    return None


def _held(srv: Running, client_port: int) -> bool:
    """Whether the server still holds an established connection from this client port."""
    return (_server_end(srv, client_port) or ("", 0))[0] == "01"


def _never_reading(srv: Running) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the attacker's choice: its window stays shut
    s.connect((srv.host, srv.port))
    s.settimeout(1)
    return s


def test_a_client_that_stops_reading_is_reset_at_the_write_deadline(srv: Running) -> None:
    # One public request at a time, never reading a response: the responses fill the kernel's buffers and
    # uvicorn waits to write with no deadline of its own (no head, body or idle timer runs meanwhile).
    # Each request is sent once the server has read the last: a read holding 17 of them would meet the
    # pipelining limit, whose close frees the connection with or without a write deadline.
    with _never_reading(srv) as s:
        port = s.getsockname()[1]
        for _ in range(3000):
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: mlsec\r\n\r\n")
            sent = time.monotonic()
            while (end := _server_end(srv, port)) and end[1] and time.monotonic() - sent < 1:
                time.sleep(0.002)
            if not end or end[1]:
                break  # the server stopped reading: its buffers to this client are full
        assert end is not None and end[1], f"the server never stopped reading (its end: {end})"
        stalled = time.monotonic()
        while _held(srv, port) and time.monotonic() - stalled < WRITE_TIMEOUT + 10:
            time.sleep(0.2)
        assert not _held(srv, port), f"still held {time.monotonic() - stalled:.0f} s after the client stopped"
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200


def test_pipelined_requests_are_queued_sixteen_at_most(srv: Running) -> None:
    # 17 pipelined requests in one write (one answered, sixteen queued) are all answered; 18 are a 400 and a close.
    for count, answers in ((17, [b"200"] * 17), (18, [b"400"])):
        with socket.create_connection((srv.host, srv.port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: mlsec\r\n\r\n" * (count - 1)
                      + b"GET /metrics HTTP/1.1\r\nHost: mlsec\r\nConnection: close\r\n\r\n")
            reply = read_to_close(s)
        assert re.findall(rb"HTTP/1.1 (\d+)", reply) == answers, (count, reply[:300])
    assert reply.endswith(b"more than 16 pipelined requests")  # the 400 says which limit
    # 4 MiB of them, sent once and never read: uvicorn queued every one it read (~2 KiB each, 300+ MiB).
    before = _rss_kib(srv)
    with _never_reading(srv) as s:
        try:
            s.sendall(b"GET /x HTTP/1.1\r\n\r\n" * ((4 << 20) // 20))
        except OSError:
            pass  # closed before it took everything
        time.sleep(2)
    grown_mib = (_rss_kib(srv) - before) / 1024
    assert grown_mib < 32, f"the server grew {grown_mib:.0f} MiB from 4 MiB of pipelined requests"


def test_chunked_trailers_do_not_reach_the_model(srv: Running) -> None:
    # httptools adds a chunked body's trailers to the request's headers as they arrive, after the guard read
    # them. CloudEvents headers are a probe kserve answers visibly (a CloudEvent reply): as headers they reach
    # it, as trailers they must not.
    body = json.dumps({"instances": [GOOD]}).encode()
    head = (f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {srv.keys['alice']}\r\n").encode()
    ce = b"ce-specversion: 1.0\r\nce-source: probe\r\nce-type: probe\r\nce-id: 1\r\n"
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
    replies = []
    for request in (head + ce + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, chunked + ce + b"\r\n"):
        with socket.create_connection((srv.host, srv.port), timeout=10) as s:
            s.sendall(request)
            replies.append(read_response(s))
    as_headers, as_trailers = replies
    assert as_headers.startswith(b"HTTP/1.1 200") and b"\r\nce-specversion: 1.0\r\n" in as_headers, as_headers[:400]
    assert as_trailers.startswith(b"HTTP/1.1 200") and b"\r\nce-" not in as_trailers, as_trailers[:400]


def test_protocol_upgrades_are_refused_and_closed(srv: Running) -> None:
    # uvicorn handed a websocket upgrade to its websocket protocol, beyond the connection's deadlines: with a
    # one-byte body it was never answered nor closed (held past every deadline, no key needed).
    ws = (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n")
    for request in (f"GET {V1} HTTP/1.1\r\nHost: mlsec\r\nContent-Length: 1\r\n".encode() + ws + b"\r\nx",
                    b"GET /v2/health/ready HTTP/1.1\r\nHost: mlsec\r\n" + ws + b"\r\n",
                    f"POST {V1} HTTP/1.1\r\nHost: mlsec\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    f"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\n{{}}".encode(),
                    b"CONNECT 127.0.0.1:8333 HTTP/1.1\r\nHost: 127.0.0.1:8333\r\n\r\n"):
        with socket.create_connection((srv.host, srv.port), timeout=HEAD_TIMEOUT) as s:
            s.sendall(request)
            reply = read_to_close(s)  # a held connection times out here
        assert reply.startswith(b"HTTP/1.1 400") and b"protocol upgrades" in reply, (request[:60], reply[:300])
    assert post(srv.connect(), V1, {"instances": [GOOD]}, srv.keys["alice"])[0] == 200
