"""The request-head deadline uvicorn lacks (slowloris before the guard ever runs).

uvicorn closes a connection only when it idles after a response, and any byte received restarts that
clock. So a client holds a connection open for as long as it likes by connecting and sending nothing,
by sending its headers a byte at a time, or by dribbling the body of a request the guard already
refused (uvicorn discards those bytes, and each one restarts the keep-alive clock). Here a request's
head (request line and headers) must be complete within head_timeout_s of the connection opening, or
of the first byte after a response; otherwise the connection is closed. The leftover body of a request
refused before it was read counts against that deadline until it is all in; then the connection idles.
The body has its own deadline in the guard (GuardConfig.body_timeout_s), and idle keep-alive connections
keep uvicorn's timeout (GuardConfig.idle_timeout_s).
A head is bounded in size too: httptools buffers a header value without limit, so within the deadline one
connection could make the server hold gigabytes (a header bomb); past max_head_bytes it is closed. And in
count: a megabyte of tiny header lines cost the server half a second of CPU per request; past max_headers
fields uvicorn answers 400 and closes. uvicorn parses every pipelined request in what it has read (256 KiB:
ten thousand tiny requests, 2 KiB of state each) and queues them all; past max_pipelined queued requests it
answers 400 and closes. And it has no write deadline: a peer that stops reading (its TCP window shut) holds
the connection, and the responses queued for it, for ever, even past close(); the kernel resets a connection
whose sent data stays unacknowledged for write_timeout_s (TCP_USER_TIMEOUT, Linux). A chunked body's
trailers are dropped: httptools reports them as headers, and uvicorn would add them to the request's
headers after the guard judged those (ASGI has no request trailers); they count against max_head_bytes,
not max_headers. A request to upgrade the protocol (websocket, h2c, CONNECT) is answered 400 and closed.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadDeadline(HttpToolsProtocol):  # type: ignore[misc]
    head_timeout_s = 10.0  # set per server by protocol(); a class attribute because uvicorn builds the instances
    # Bytes since the last complete head that were not body: the head being parsed, plus chunked framing.
    # Generous for framing (a body in one-byte chunks is 5 framing bytes a byte); a read can add 256 KiB more.
    max_head_bytes = 1 << 20
    max_headers = 100  # as Apache's LimitRequestFields; a proxy chain adds a few dozen at most
    max_pipelined = 16  # requests queued behind the one being answered; common clients pipeline none
    write_timeout_s = 30.0  # set per server by protocol()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._write_deadline(transport)
        self._head: asyncio.TimerHandle | None = None
        self._arm()
        self._head_bytes = 0
        self._trailers = False
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # a new head, or leftovers
        self._head_bytes += len(data)  # counted whatever the timer: a pipelined head grows while a request runs
        super().data_received(data)
        if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._cancel()
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers:  # a chunked body's: uvicorn would add them to the headers the guard already judged
            return
        if len(self.headers) >= self.max_headers:
            self._refuse(f"more than {self.max_headers} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._refuse_upgrade()
        self._queue_limit()
        self._cancel()
        self._head_bytes = 0
        super().on_headers_complete()
        self._trailers = True  # any header from here to the next message is a trailer

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._trailers = False
        self._unset_keepalive_if_required()  # a request has begun: the connection is not idle
        self._arm()  # a pipelined head that began in the read that ended the last leftovers

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.transport.is_closing():
            # A refused request's body, all in: no head pends, and the connection idles from here. uvicorn armed
            # its idle timer at the response and the body's bytes disarmed it: armed again, or nothing would
            # ever close this connection.
            self._cancel()
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def on_body(self, body: bytes) -> None:
        self._head_bytes = max(0, self._head_bytes - len(body))  # body, read or discarded, is not head
        super().on_body(body)

    def _write_deadline(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.write_timeout_s * 1000))

    def _refuse_upgrade(self) -> None:
        # The server speaks HTTP/1.1 and nothing else. uvicorn handed a websocket upgrade to its websocket
        # protocol, out of reach of these deadlines: one with a body was never answered nor closed (held for
        # ever, no key needed). And the parser reads nothing past an h2c or CONNECT head.
        if self.parser.should_upgrade():
            self._refuse("protocol upgrades (websocket, h2c, CONNECT) are not served: send plain HTTP/1.1")

    def _queue_limit(self) -> None:
        if len(self.pipeline) >= self.max_pipelined:
            self._refuse(f"more than {self.max_pipelined} pipelined requests")

    def _refuse(self, why: str) -> None:
        """Raised through httptools, so uvicorn answers 400 and closes; the answer says why (send_400_response)."""
        self._refusal = why
        raise ValueError(why)

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers "Invalid HTTP request received." to every parse error: the client is told which limit.
        super().send_400_response(self._refusal or msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        """Starts the head deadline unless it already runs (it is never restarted by later bytes)."""
        if self._head is None:
            self._head = self.loop.call_later(self.head_timeout_s, self._expired)

    def _cancel(self) -> None:
        if self._head is not None:
            self._head.cancel()
            self._head = None

    def _expired(self) -> None:
        self._head = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol(head_timeout_s: float, write_timeout_s: float) -> type[HeadDeadline]:
    """uvicorn's http protocol class with these deadlines."""
    return type("HeadDeadline", (HeadDeadline,), {"head_timeout_s": head_timeout_s, "write_timeout_s": write_timeout_s})
