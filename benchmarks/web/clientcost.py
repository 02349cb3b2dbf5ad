"""Why the web benchmark's client is not aiohttp's: ``python -m benchmarks.web.clientcost``.

Serves the no-session ceilings of Starlette (uvicorn) and aiohttp (no database
needed), and loads each with the benchmark's raw keep-alive client
(`benchmarks.web.client`) and with aiohttp's ``ClientSession`` (one per client, each
with its own cookie jar, as the benchmark's clients have), alternately, for 1, 16 and
64 clients. It prints both clients' CPU time per request and the requests/s each got
out of the same server: the client shares the two cores with the server, so the
dearer client leaves less for it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .apps import AppConfig
from .client import run_load
from .contenders import BY_KEY
from .server import WebServer


async def aiohttp_load(port: int, clients: int, seconds: float) -> int:
    """`clients` aiohttp sessions requesting ``/ping`` for `seconds`; the requests made."""
    import aiohttp

    stop = time.perf_counter() + seconds
    made = 0

    async def one() -> None:
        nonlocal made
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            while time.perf_counter() < stop:
                async with session.get(f"http://127.0.0.1:{port}/ping") as response:
                    if response.status != 200:
                        raise RuntimeError(f"GET /ping answered {response.status}")
                    await response.read()
                made += 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return made


def measure(port: int, client: str, clients: int, seconds: float) -> tuple[float, float]:
    """(client CPU µs per request, requests/s) of one client kind."""
    cpu, wall = time.process_time(), time.perf_counter()
    if client == "raw":
        made = asyncio.run(run_load(port, "/ping", False, clients, 0.0, seconds)).sample.ops
    else:
        made = asyncio.run(aiohttp_load(port, clients, seconds))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / made * 1e6, made / wall


def main(argv: Sequence[str] | None = None) -> int:
    """Print both clients' cost against both ceilings."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.web.clientcost", description=__doc__)
    p.add_argument("--clients", default="1,16,64", help="comma-separated (default 1,16,64)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    levels = [int(n) for n in args.clients.split(",")]
    config = AppConfig("dbname=unused", "unused", 1, Path("."), 1)
    print("client CPU per request and the requests/s it got (round by round):")
    for key in ("starlette_none", "aiohttp_none"):
        with WebServer(BY_KEY[key], config) as server:
            for n in levels:
                figures: dict[str, list[tuple[float, float]]] = {"raw": [], "aiohttp": []}
                for _ in range(args.rounds):
                    for client in figures:
                        figures[client].append(measure(server.port, client, n, args.duration))
                text = "  ".join(
                    f"{client}: " + ", ".join(f"{us:.0f} µs/req ({rps:,.0f}/s)" for us, rps in runs)
                    for client, runs in figures.items()
                )
                print(f"  {key} N={n}: {text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
