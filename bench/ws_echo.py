"""WebSocket echo server and round-trip latency client for bench/websocket.sh.

  ws_echo.py server PORT                  echo every message (python3-websockets)
  ws_echo.py client URL N SIZE CONNS      CONNS connections, each sends N messages of SIZE bytes
                                          one at a time (send, wait for the echo); prints
                                          "p50_us p90_us p99_us msgs_per_s"
"""

import asyncio
import os
import statistics
import sys
import time

import websockets


async def serve(port: int):
    async def echo(ws, path=None):
        try:
            async for m in ws:
                await ws.send(m)
        except websockets.ConnectionClosed:
            pass
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None, compression=None):
        await asyncio.Future()


async def one(url: str, n: int, payload: bytes, out: list[float]):
    async with websockets.connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        for _ in range(20):  # warm-up
            await ws.send(payload)
            await ws.recv()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await ws.send(payload)
            await ws.recv()
            out.append((time.perf_counter_ns() - t0) / 1000)


async def client(url: str, n: int, size: int, conns: int):
    samples: list[float] = []
    payload = os.urandom(size)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(url, n, payload, samples) for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(samples, n=100)
    print(f"{q[49]:.0f} {q[89]:.0f} {q[98]:.0f} {len(samples) / elapsed:.0f}")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
