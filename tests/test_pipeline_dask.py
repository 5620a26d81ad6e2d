"""The Dask engine against the embedded DuckDB engine, on a real local Dask cluster.

One cluster per module (a scheduler and two worker processes, every socket on 127.0.0.1): the
netguard plugin watches this process, and the workers install the guard too when they import
netvigil (they inherit ``NETVIGIL_NETGUARD``), so any traffic off loopback fails the test.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from netvigil.pipeline.aggregate import aggregate_duckdb
from netvigil.pipeline.dask_engine import (
    ENGINE_AGGREGATES,
    ClusterError,
    aggregate_dask,
    balanced_batches,
    local_cluster,
    run_on_cluster,
)
from netvigil.pipeline.local import RunSummary, run_local
from netvigil.pipeline.schema import SORT_KEYS, VERDICT_SCHEMA
from netvigil.pipeline.sources import PipelineInputError
from test_pipeline_aggregate import assert_tables_equal

pytestmark = pytest.mark.timeout(90)

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"


@pytest.fixture(scope="module")
def cluster_address() -> Iterator[str]:
    with local_cluster(n_workers=2, threads_per_worker=1) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        yield address


@pytest.fixture(scope="module")
def client(cluster_address: str) -> Iterator[Client]:
    # Not the default client: run_on_cluster must work without one (as in the CLI).
    with Client(cluster_address, timeout=30, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=30)
        yield c


# --- hand-built verdicts -----------------------------------------------------------------------


def _verdict_row(
    uid: str,
    when: dt.datetime,
    *,
    cc: str = "KZ",
    asn: int = 9198,
    domain: str = "example.com",
    outcome: str = "ok",
    blocked: bool = False,
    confidence: float = 0.9,
    nulls: bool = False,
) -> dict[str, object]:
    technique = outcome.split("/", 1)[0] if blocked else ""
    return {
        "measurement_uid": uid,
        "report_id": None if nulls else f"r-{uid}",
        "test_name": "web_connectivity",
        "input": None if nulls else f"https://{domain}/",
        "domain": domain,
        "probe_cc": cc,
        "probe_asn": asn,
        "measurement_start_time": when,
        "outcome": outcome,
        "technique": technique,
        "blocked": blocked,
        "confidence": confidence,
        "blocking": None if nulls else ("dns" if blocked else "false"),
        "accessible": None if nulls else not blocked,
        "fingerprint": None,
        "root": None,
        "source": "hand.jsonl",
    }


def _write_verdicts(out: Path, rows: list[dict[str, object]], writer: str, per_file: int) -> None:
    """Rows into ``out/verdicts/day=…/part-<writer>-<seq>.parquet``, `per_file` rows a file."""
    by_day: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        when = row["measurement_start_time"]
        assert isinstance(when, dt.datetime)
        by_day.setdefault(when.date().isoformat(), []).append(row)
    seq = 0
    for day, day_rows in sorted(by_day.items()):
        folder = out / "verdicts" / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(day_rows), per_file):
            chunk = day_rows[start : start + per_file]
            pq.write_table(
                pa.Table.from_pylist(chunk, schema=VERDICT_SCHEMA),
                folder / f"part-{writer}-{seq:05d}.parquet",
            )
            seq += 1


def _empty_partition(out: Path, day: str) -> None:
    folder = out / "verdicts" / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(VERDICT_SCHEMA.empty_table(), folder / "part-empty-00000.parquet")


def _assert_same(left: dict[str, pa.Table], right: dict[str, pa.Table]) -> None:
    assert_tables_equal(left, right, ENGINE_AGGREGATES)


UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _edge_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    n = 0

    def add(when: dt.datetime, **kw: object) -> None:
        nonlocal n
        n += 1
        rows.append(_verdict_row(f"u{n:05d}", when, **kw))  # type: ignore[arg-type]

    # A domain blocked by two techniques over three days, one measurement just before midnight.
    for day in range(3):
        base = T0 + dt.timedelta(days=day)
        add(base, domain="blocked.kz", outcome="dns/nxdomain", blocked=True, confidence=0.95)
        add(
            base + dt.timedelta(hours=13, minutes=59, seconds=59, microseconds=999_999),
            domain="blocked.kz",
            outcome="tls/timeout",
            blocked=True,
            confidence=0.7,
        )
        add(base + dt.timedelta(hours=1), domain="blocked.kz", outcome="ok")
    # A domain never blocked (confidence_mean must be 0, no techniques row).
    for k in range(4):
        add(T0 + dt.timedelta(hours=k), domain="fine.org", outcome="ok", confidence=1.0)
    add(T0, domain="fine.org", outcome="down", confidence=0.5)
    # Nulls in every nullable column, another country and network, an unknown network (asn 0).
    add(
        T0,
        cc="RU",
        asn=12389,
        domain="nulls.ru",
        outcome="http/blockpage",
        blocked=True,
        confidence=0.333333,
        nulls=True,
    )
    add(T0, cc="RU", asn=0, domain="nulls.ru", outcome="unknown", confidence=0.0, nulls=True)
    # Tests without a URL: empty domain, left out of the aggregates by both engines.
    add(T0, domain="", outcome="ok")
    add(T0, domain="", outcome="dns/nxdomain", blocked=True)
    # A mean exactly on a tie at 6 places (0.1234565): both engines sum integer nano-units and
    # round half to even, whatever the order of the partitions.
    for conf in (0.123456, 0.123457):
        add(
            T0,
            cc="BY",
            asn=6697,
            domain="tie.by",
            outcome="tcp/reset",
            blocked=True,
            confidence=conf,
        )
    return rows


def test_balanced_batches() -> None:
    sizes = [100, 1, 50, 50, 2, 97, 0, 30, 30]
    batches = balanced_batches(sizes, lambda x: x, 3)
    assert len(batches) == 3
    # Runs of consecutive items (discovery order), largest run first, within one item of even.
    assert [x for b in sorted(batches, key=lambda b: sizes.index(b[0])) for x in b] == sizes
    loads = [sum(max(1, x) for x in b) for b in batches]
    assert loads == sorted(loads, reverse=True)
    assert max(loads) - sum(loads) / 3 <= max(sizes)
    assert balanced_batches([5], lambda x: x, 4) == [[5]]
    assert balanced_batches([], lambda x: x, 4) == []
    assert len(balanced_batches([1] * 10, lambda x: x, 4)) == 4


def test_aggregates_edge_cases(tmp_path: Path, client: Client) -> None:
    out = tmp_path / "out"
    rows = _edge_rows()
    # Small files so that groups span several partitions, plus empty partitions.
    _write_verdicts(out, rows, "a", per_file=2)
    _empty_partition(out, "2024-03-01")
    _empty_partition(out, "2024-02-28")
    dask_tables = aggregate_dask(out, client)
    _assert_same(dask_tables, aggregate_duckdb(out))

    daily = {(r["domain"], r["day"]): r for r in dask_tables["daily"].to_pylist()}
    assert daily[("fine.org", dt.date(2024, 3, 1))]["confidence_mean"] == 0.0
    assert daily[("tie.by", dt.date(2024, 3, 1))]["confidence_mean"] == 0.123456
    assert daily[("fine.org", dt.date(2024, 3, 1))]["blocked"] == 0
    assert daily[("blocked.kz", dt.date(2024, 3, 2))]["ok"] == 1
    assert daily[("blocked.kz", dt.date(2024, 3, 2))]["confidence_mean"] == 0.825
    assert "" not in {r["domain"] for r in dask_tables["outcomes"].to_pylist()}
    techniques = {(r["domain"], r["outcome"]): r for r in dask_tables["techniques"].to_pylist()}
    assert ("fine.org", "ok") not in techniques
    late = techniques[("blocked.kz", "tls/timeout")]
    assert late["count"] == 3
    assert late["last_seen"] == T0 + dt.timedelta(
        days=2, hours=13, minutes=59, seconds=59, microseconds=999_999
    )


def test_aggregates_no_verdicts(tmp_path: Path, client: Client) -> None:
    out = tmp_path / "out"
    assert all(t.num_rows == 0 for t in aggregate_dask(out, client).values())
    _empty_partition(out, "2024-03-01")
    tables = aggregate_dask(out, client)
    _assert_same(tables, aggregate_duckdb(out))
    assert all(t.num_rows == 0 for t in tables.values())


def test_aggregates_random(tmp_path: Path, client: Client) -> None:
    """A few thousand random rows over many files: every group summed across partitions."""
    rng = random.Random(7)
    outcomes = [
        "ok",
        "ok",
        "ok",
        "down",
        "unsupported",
        "dns/nxdomain",
        "tls/timeout",
        "http/blockpage",
    ]
    rows = []
    for n in range(3000):
        outcome = rng.choice(outcomes)
        blocked = "/" in outcome
        rows.append(
            _verdict_row(
                f"r{n:06d}",
                T0 + dt.timedelta(seconds=rng.randrange(10 * 86400)),
                cc=rng.choice(["KZ", "RU", "IR"]),
                asn=rng.choice([0, 9198, 12389, 44244]),
                domain=rng.choice(["a.com", "b.org", "c.net", "d.kz", ""]),
                outcome=outcome,
                blocked=blocked,
                confidence=round(rng.random(), rng.choice([2, 3, 7, 17])),
                nulls=rng.random() < 0.2,
            )
        )
    rng.shuffle(rows)
    _write_verdicts(out := tmp_path / "out", rows, "x", per_file=97)
    _assert_same(aggregate_dask(out, client), aggregate_duckdb(out))


def _listening() -> dict[int, set[str]]:
    """Listening TCP sockets of this machine: port → local addresses (from /proc/net/tcp*)."""
    found: dict[int, set[str]] = {}
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            assert len(hex_addr) == width
            if width == 8:
                address = str(ipaddress.IPv4Address(bytes.fromhex(hex_addr)[::-1]))
            else:
                words = bytes.fromhex(hex_addr)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4))
                address = str(ipaddress.IPv6Address(raw))
            found.setdefault(int(hex_port, 16), set()).add(address)
    return found


def test_cluster_listens_on_loopback_only(client: Client) -> None:
    info = client.scheduler_info()
    assert len(info["workers"]) == 2
    ports = []
    for address in [info["address"], *info["workers"]]:
        assert address.startswith("tcp://127.0.0.1:"), address
        ports.append(int(address.rsplit(":", 1)[1]))
    # The scheduler's HTTP endpoints (/health, /metrics; "dashboard" is only their name here,
    # the Bokeh dashboard is off) and the workers' own HTTP endpoints: loopback too.
    ports.extend(int(port) for port in info.get("services", {}).values())
    for worker in info["workers"].values():
        ports.extend(int(port) for port in worker.get("services", {}).values())
        if worker.get("nanny"):
            ports.append(int(worker["nanny"].rsplit(":", 1)[1]))
    listening = _listening()
    for port in ports:
        assert listening.get(port) == {"127.0.0.1"}, (port, listening.get(port))


# --- the whole pipeline: run_on_cluster against run_local ----------------------------------------

CHANGES = [  # (day offset, hour, country, network) for each copy of the 29 real measurements
    (0, 3, "KZ", 9198),
    (1, 3, "KZ", 9198),
    (1, 17, "RU", 12389),
    (2, 9, "KZ", 48503),
]


def _ooni_raw(root: Path) -> Path:
    """The 29 real measurements, four times over three days, two countries and three
    networks, in OONI's ``raw/YYYYMMDD/HH/CC/web_connectivity/`` layout (.jsonl.gz), plus a
    truncated gzip and a file with a line of invalid JSON."""
    lines = DATA.read_bytes().splitlines()
    raw = root / "raw"
    for copy, (offset, hour, cc, asn) in enumerate(CHANGES):
        day = dt.date(2024, 3, 1) + dt.timedelta(days=offset)
        folder = raw / day.strftime("%Y%m%d") / f"{hour:02d}" / cc / "web_connectivity"
        folder.mkdir(parents=True, exist_ok=True)
        out: list[bytes] = []
        for n, line in enumerate(lines):
            m = json.loads(line)
            if copy:  # the copies get their own ids (from their bytes); the first keeps OONI's
                m.pop("measurement_uid", None)
            m["measurement_start_time"] = f"{day} {hour:02d}:{n:02d}:07"
            m["probe_cc"], m["probe_asn"] = cc, f"AS{asn}"
            out.append(json.dumps(m).encode())
        for part in range(2):  # two files per cell: more files than batches
            chunk = b"\n".join(out[part::2]) + b"\n"
            (folder / f"{part}.jsonl.gz").write_bytes(gzip.compress(chunk))
    bad = raw / "20240302" / "05" / "KZ" / "web_connectivity"
    bad.mkdir(parents=True)
    originals = []  # the untouched measurements, with their own dates and ids
    for line in lines[:8]:
        m = json.loads(line)
        m.pop("measurement_uid", None)  # ids from their bytes: none repeats a copy's
        originals.append(json.dumps(m).encode())
    whole = gzip.compress(b"\n".join(originals[:6]) + b"\n")
    (bad / "truncated.jsonl.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (bad / "invalid.jsonl").write_bytes(originals[6] + b"\n{not json\n" + originals[7] + b"\n")
    return raw


def _rows(out: Path, table: str) -> pa.Table:
    """Every Parquet file of a row table, with its partition's day, sorted by SORT_KEYS."""
    parts = []
    for path in sorted((out / table).glob("day=*/*.parquet")):
        t = pq.read_table(path)
        day = path.parent.name.split("=", 1)[1]
        parts.append(t.append_column("day", pa.array([day] * t.num_rows, pa.string())))
    table_all = pa.concat_tables(parts)
    keys = [*SORT_KEYS[table], "day"]
    return table_all.sort_by([(k, "ascending") for k in keys])


@pytest.fixture(scope="module")
def both_runs(
    tmp_path_factory: pytest.TempPathFactory, cluster_address: str
) -> tuple[Path, Path, RunSummary, RunSummary, list[tuple[int, int, int]]]:
    base = tmp_path_factory.mktemp("pipeline")
    raw = _ooni_raw(base / "in")
    local = run_local([raw], base / "local", workers=1)
    seen: list[tuple[int, int, int]] = []
    cluster = run_on_cluster(
        [raw],
        base / "dask",
        cluster_address,
        progress=lambda *args: seen.append(args),
    )
    return base / "local", base / "dask", local, cluster, seen


def test_cluster_run_equals_local_run(
    both_runs: tuple[Path, Path, RunSummary, RunSummary, list[tuple[int, int, int]]],
) -> None:
    local_out, dask_out, local, cluster, seen = both_runs
    assert cluster.engine == "dask" and cluster.workers == 2
    for table in ("verdicts", "observations"):
        a, b = _rows(local_out, table), _rows(dask_out, table)
        assert a.num_rows > 0
        assert a.schema.equals(b.schema)
        assert a.equals(b), table
    verdicts = _rows(dask_out, "verdicts")
    # Every copy, and what could be read of the two bad files (the lines before the cut, the
    # two valid lines around the invalid one).
    assert verdicts.num_rows == cluster.totals["measurements"] > 4 * 29 + 2
    assert len(set(verdicts.column("measurement_uid").to_pylist())) == verdicts.num_rows
    assert len(set(verdicts.column("day").to_pylist())) >= 3
    # Several batches ran, written by distinct Dask writers.
    writers = {p.name.split("-")[1] for p in (dask_out / "verdicts").rglob("*.parquet")}
    assert len(writers) >= 2 and all(w.startswith("d") for w in writers)
    for name in ("daily", "outcomes", "techniques", "events", "apps"):
        a = pq.read_table(local_out / "aggregates" / f"{name}.parquet")
        b = pq.read_table(dask_out / "aggregates" / f"{name}.parquet")
        assert a.schema.equals(b.schema)
        assert a.equals(b), name
    assert pq.read_table(dask_out / "aggregates" / "daily.parquet").num_rows > 0

    ingest_local = json.loads((local_out / "ingest.json").read_text())
    ingest_dask = json.loads((dask_out / "ingest.json").read_text())
    assert ingest_dask["engine"] == "dask"
    assert ingest_dask["files"] == ingest_local["files"]
    assert ingest_dask["totals"] == ingest_local["totals"]
    corrupt = ingest_dask["totals"]["corrupt"]
    assert corrupt == {"invalid-json": 1, "truncated-gzip": 1}
    assert [f.to_dict() for f in cluster.files] == [f.to_dict() for f in local.files]
    # Progress: once per finished batch, ending with every file and measurement.
    assert seen and seen[-1] == (len(cluster.files), len(cluster.files), verdicts.num_rows)


def test_cluster_run_refuses_previous_output(
    both_runs: tuple[Path, Path, RunSummary, RunSummary, list[tuple[int, int, int]]],
    cluster_address: str,
    tmp_path: Path,
) -> None:
    _, dask_out, *_ = both_runs
    src = tmp_path / "one.jsonl"
    src.write_bytes(DATA.read_bytes().splitlines()[0] + b"\n")
    with pytest.raises(PipelineInputError, match="previous run"):
        run_on_cluster([src], dask_out, cluster_address)


def test_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "one.jsonl"
    src.write_bytes(DATA.read_bytes().splitlines()[0] + b"\n")
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ClusterError) as info:
        run_on_cluster([src], tmp_path / "out", f"tcp://127.0.0.1:{port}", connect_timeout=2)
    message = str(info.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message
    assert not (tmp_path / "out").exists()


def test_cli_runs_on_the_cluster(
    tmp_path: Path, cluster_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``netvigil pipeline run SRC --out DIR --cluster ADDR``: the CLI's path into this engine,
    with a relative input path (the workers do not share the client's working directory)."""
    from netvigil.cli import main

    src = tmp_path / "in" / "sample.jsonl"
    src.parent.mkdir()
    src.write_bytes(DATA.read_bytes())
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        status = main(
            ["pipeline", "run", "in", "--out", "out", "--cluster", cluster_address, "--json"]
        )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["engine"] == "dask"
    assert summary["totals"]["measurements"] == 29
    assert [f["source"] for f in summary["files"]] == ["sample.jsonl"]
    assert (out / "aggregates" / "events.parquet").exists()
    # Dask's own chatter stays out of the CLI's output.
    assert "distributed" not in captured.err


# --- messaging apps: OUT/endpoints and the apps aggregate ----------------------------------------

IM_DATA = Path(__file__).parent / "data" / "conformance_im" / "messaging.jsonl"


def test_messaging_endpoints_and_apps_agree_between_engines(
    tmp_path: Path, cluster_address: str
) -> None:
    """The messaging measurements, one copy of each in two folders (the same uid: counted
    once) and split over several files: the endpoint rows and ``apps`` of both engines."""
    lines = [line for line in IM_DATA.read_bytes().splitlines() if line.strip()]
    raw = tmp_path / "in"
    for copy_name in ("a", "b"):
        for part in range(3):
            folder = raw / copy_name / f"p{part}"
            folder.mkdir(parents=True)
            (folder / "m.jsonl").write_bytes(b"\n".join(lines[part::3]) + b"\n")
    run_local([raw], tmp_path / "local", workers=1)
    run_on_cluster([raw], tmp_path / "dask", cluster_address)
    a, b = _rows(tmp_path / "local", "endpoints"), _rows(tmp_path / "dask", "endpoints")
    assert a.num_rows > 2 * len(lines) and a.equals(b)
    apps_local = pq.read_table(tmp_path / "local" / "aggregates" / "apps.parquet")
    apps_dask = pq.read_table(tmp_path / "dask" / "aggregates" / "apps.parquet")
    assert apps_local.schema.equals(apps_dask.schema) and apps_local.equals(apps_dask)
    whole = [r for r in apps_local.to_pylist() if r["endpoint"] == "*"]
    # every measurement once, though each came twice
    assert sum(r["measurements"] for r in whole) == len(lines)
    blocked_apps = {(r["probe_cc"], r["app"]) for r in whole if r["blocked"]}
    assert ("RU", "telegram") in blocked_apps and ("JP", "whatsapp") in blocked_apps
