"""A TCP proxy on loopback that puts a real one-way latency on connections, and counts the
round trips each connection's client waited for and the bytes its server answered.

Every chunk reaches the other side `delay` seconds after it was sent, in order, in both
directions: a request and its answer cost two delays, however many bytes they carry. A new
connection reaches the server only after the three one-way trips of TCP's handshake (SYN,
SYN-ACK, ACK), so the handshake's round trip is paid as on a real network even though
connect() to the proxy returns at once; what the client sends meanwhile waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

LOOPBACK = "127.0.0.1"
# How long a closed connection's last data may take to leave: loopback needs far less.
_CLOSE_SECONDS = 1.0
Sender = Literal["client", "server"]
T = TypeVar("T")


@dataclass
class ConnectionTrace:
    """One connection's traffic as flights: runs of data from one side with nothing from the
    other in between. Each server flight is an answer (the greeting answers the connection)."""

    server_flights: int = 0
    server_bytes: int = 0  # TLS records included
    last_sender: Sender | None = None
    client_closed: bool = False

    def record(self, sender: Sender, size: int) -> None:
        if sender == "server":
            self.server_bytes += size
            # Data the server sends after the client closed is an answer nobody waited for.
            if self.last_sender != "server" and not self.client_closed:
                self.server_flights += 1
        self.last_sender = sender

    @property
    def round_trips(self) -> int:
        """TCP's handshake, then one per answer the client waited for."""
        return 1 + self.server_flights


class LatencyProxy:
    """Forwards connections on `LOOPBACK:port` to `upstream_port`, `delay` seconds each way.

    Use it as a context manager; `take_traces()` returns the connections seen since its last
    call. It runs its own event loop in a thread, so blocking clients can use it.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self._upstream_port = upstream_port
        self._delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy")
        self._lock = threading.Lock()  # traces are written by the loop, read by the caller
        self._traces: list[ConnectionTrace] = []
        self._connections: set[asyncio.Task[Any]] = set()
        self.port = 0

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._serve, LOOPBACK, 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def take_traces(self) -> list[ConnectionTrace]:
        with self._lock:
            traces, self._traces = self._traces, []
        return traces

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _shutdown(self) -> None:
        self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        trace = ConnectionTrace()
        with self._lock:
            self._traces.append(trace)
        loop = asyncio.get_running_loop()
        to_server: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        to_client: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        to_client.set_result(client_out)
        try:
            try:
                async with asyncio.TaskGroup() as flows:
                    # The client's data is timed from its arrival, before the server is
                    # reached.
                    flows.create_task(self._forward(client_in, to_server, "client", trace))
                    await asyncio.sleep(3 * self._delay)  # SYN, SYN-ACK, ACK
                    upstream = asyncio.open_connection(LOOPBACK, self._upstream_port)
                    server_in, server_out = await upstream
                    to_server.set_result(server_out)
                    flows.create_task(self._forward(server_in, to_client, "server", trace))
            except* (OSError, EOFError):
                pass  # refused or reset: the other side is closed below, as the kernel would
        except asyncio.CancelledError:
            # The proxy shuts down. Ending, not cancelled: Python 3.11's stream callback
            # would print a cancelled connection's traceback.
            pass
        finally:
            writers = [client_out, *([to_server.result()] if to_server.done() else [])]
            for writer in writers:
                writer.close()
            for writer in writers:
                # A reset's error, retrieved (left unread, asyncio prints it at exit); a peer
                # that stopped reading, or the proxy's shutdown, waits at most _CLOSE_SECONDS.
                try:
                    await asyncio.wait_for(writer.wait_closed(), _CLOSE_SECONDS)
                except (OSError, TimeoutError, asyncio.CancelledError):
                    writer.transport.abort()
            self._connections.discard(connection)

    async def _forward(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.Future[asyncio.StreamWriter],
        sender: Sender,
        trace: ConnectionTrace,
    ) -> None:
        """Reads chunks as they arrive and writes each `delay` after its arrival, in order."""
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                data = await source.read(65536)
                with self._lock:
                    if data:
                        trace.record(sender, len(data))
                    elif sender == "client":
                        trace.client_closed = True
                in_flight.put_nowait((loop.time() + self._delay, data))
                if not data:
                    return

        async def deliver() -> None:
            writer = await sink
            while True:
                due, data = await in_flight.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:  # the sender closed its side; so does the proxy, as late
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        async with asyncio.TaskGroup() as halves:
            halves.create_task(receive())
            halves.create_task(deliver())
