"""A TCP relay that delays each direction, for measuring hpcexec over a distant link.

This machine's kernel has no ``netem``, so the delay is added in user space: every chunk read
from one side is written to the other ``delay`` seconds after it arrived, in order. It also
counts round trips: the times data from the server follows data from the client on a
connection, so a pipelined exchange of many requests counts once (SSH's own messages, such as
window adjustments, may add a few: a figure to compare, not an exact count).

    with DelayedLink(target_port=2222, delay=0.025) as link:
        ...connect to 127.0.0.1:link.port...
        print(link.round_trips)

``RelayProcess`` runs the same relay in a process of its own, so the threads of the program
measured (which hold the GIL) do not hold its packets back: ``python tests/delaylink.py
TARGET_PORT DELAY`` prints its port, then answers each line on its stdin with the round trips.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time


class DelayedLink:
    """127.0.0.1:``port`` relays to 127.0.0.1:``target_port``, ``delay`` s each way."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self.round_trips = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delaylink")
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> DelayedLink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop accepting and end every relayed connection's tasks."""
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        last = ["up"]  # the direction of the last chunk on this connection
        try:
            await asyncio.gather(
                self._pump(creader, swriter, "up", last),
                self._pump(sreader, cwriter, "down", last),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # the relay stops
            swriter.close()
            cwriter.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str, last: list
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                if way == "down" and last[0] == "up":
                    self.round_trips += 1
                last[0] = way
                queue.put_nowait((time.monotonic() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await asyncio.gather(sender, return_exceptions=True)


class RelayProcess:
    """A :class:`DelayedLink` in a process of its own; the same ``port`` and ``round_trips``."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> RelayProcess:
        argv = [sys.executable, __file__, str(self.target_port), str(self.delay)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.port = int(self._readline())
        return self

    def _readline(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the relay process ended (exit code {self._proc.wait()})")
        return line

    @property
    def round_trips(self) -> int:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write("count\n")
        self._proc.stdin.flush()
        return int(self._readline())

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()  # the relay ends at the end of its input
        self._proc.wait(10)


def _serve(target_port: int, delay: float) -> None:
    with DelayedLink(target_port, delay) as link:
        print(link.port, flush=True)
        for _ in sys.stdin:
            print(link.round_trips, flush=True)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]))
