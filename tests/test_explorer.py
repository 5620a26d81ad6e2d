"""The explorer over a real collector log and a real pipeline run: every page, its parameters,
its headers, and hostile measurement content shown as text only."""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from explorer_world import BLOCKPAGE_BODY, HOSTILE, HOSTILE_URL, build_world
from netvigil.cli import main as netvigil_main
from netvigil.evidence.log import verify_measurement
from netvigil.explorer.app import CSP, create_app
from netvigil.explorer.html import el, url_ok

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_world(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def client(world: dict[str, Any]) -> TestClient:
    app = create_app(world["pipeline"], world["collector"])
    with TestClient(app) as c:
        yield c  # type: ignore[misc]


class Page(HTMLParser):
    """Everything a browser would act on: elements, attributes, links, text."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.feed(body)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def links(self) -> list[str]:
        return [v or "" for _, k, v in self.attrs if k in ("href", "src", "action")]


def assert_inert(body: str) -> Page:
    """No script, no event handler, no frame or object, no link out of the explorer."""
    page = Page(body)
    for bad in ("script", "iframe", "object", "embed", "img", "base", "style"):
        assert bad not in page.tags, bad
    assert not [a for a in page.attrs if a[1].lower().startswith("on")]
    assert not [a for a in page.attrs if a[1] == "style"]
    for link in page.links:
        assert link.startswith(("/", "#", "?")) and not link.startswith("//"), link
    return page


PAGES = [
    "/",
    "/?since=2022-01-01&until=2022-01-10",
    "/country/KZ",
    "/country/kz?asn=AS9198&since=2022-01-01",
    "/domain/facebook.com?cc=KZ",
    "/domain/facebook.com",
    "/domain/news.example?cc=KZ&asn=9198",
    "/search",
    "/search?cc=KZ&asn=9198&domain=news.example&outcome=http/reset&since=2022-01-01&until=2022-01-20",
    "/search?test_name=web_connectivity&page=2",
]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_answers_with_the_security_headers(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert_inert(r.text)


def test_overview_country_and_domain_show_the_data(client: TestClient) -> None:
    home = client.get("/").text
    assert 'href="/country/KZ"' in home and 'href="/country/RU"' in home
    kz = client.get("/country/KZ").text
    page = Page(kz)
    assert "svg" in page.tags and "title" in page.tags
    assert "AS9198" in kz and "AS206026" in kz
    assert "news.example" in kz and "http/reset" in kz  # the mix of techniques
    # ranked by blocked share: news.example (blocked on AS9198 from day 9) comes first
    assert kz.index("/domain/news.example") < kz.index("/domain/example.kz")
    fb = client.get("/domain/facebook.com?cc=KZ").text
    assert "Qaznet Trust Network" in fb  # interception roots
    assert "tls/interception" in fb and "2022-01-05" in fb  # techniques, first/last seen


def test_onsets_are_listed_and_marked(client: TestClient) -> None:
    kz = client.get("/country/KZ").text
    if "Onsets of blocking in KZ: no sudden onset" in kz:
        pytest.skip("the events aggregate flagged no onset in this small world")
    assert 'class="onset"' in kz


def test_interception_claim_from_the_explorer_alone(
    client: TestClient, world: dict[str, Any]
) -> None:
    uid = world["uids"]["interception"]
    # found from the domain page, as a person would
    fb = client.get("/domain/facebook.com?cc=KZ").text
    assert f"/measurement/{uid}" in fb
    r = client.get(f"/measurement/{uid}")
    assert r.status_code == 200
    text = " ".join(Page(r.text).text)
    assert "facebook.com" in text and "AS9198" in text and "2022-01-05" in text
    assert "intercepted" in text and "Qaznet Trust Network" in text
    assert "Inclusion proof verifies" in text
    assert "157.240.1.35:443" in text and "ssl_unknown_authority" in text  # steps (observations)
    assert "copied" in text and "moved 6.0 h earlier" in text  # the forged chain taken apart
    assert f"netvigil verify {uid}.json --log-key" in text
    doc = client.get(f"/measurement/{uid}.json")
    assert doc.headers["content-disposition"].startswith("attachment")
    measurement = doc.json()
    key_link = next(x for x in Page(r.text).links if x.startswith("/log-key/"))
    pem = client.get(key_link).content
    result = verify_measurement(measurement, measurement["x_evidence"], None, pem)
    assert result.ok, result.reason
    measurement["probe_asn"] = "AS1"
    assert not verify_measurement(measurement, measurement["x_evidence"], None, pem).ok


def test_hostile_measurement_is_text_only(client: TestClient, world: dict[str, Any]) -> None:
    uid = world["uids"]["hostile"]
    r = client.get(f"/measurement/{uid}")
    assert r.status_code == 200
    page = assert_inert(r.text)
    text = "".join(page.text)
    # shown, as text: the markup, the javascript: URL, the blockpage body
    assert HOSTILE in text and HOSTILE_URL in text and "javascript:alert(document.cookie)" in text
    assert BLOCKPAGE_BODY[:200] in text
    assert "ooni.ae_3" in text  # the fingerprint that matched
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    # in the search results and their exports too
    s = client.get("/search?cc=RU&outcome=http/blockpage")
    assert_inert(s.text)
    assert uid in s.text
    rows = list(
        csv.DictReader(
            io.StringIO(client.get("/search?cc=RU&outcome=http/blockpage&format=csv").text)
        )
    )
    assert rows and rows[0]["input"] == HOSTILE_URL


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/?cc=KZ", "unknown parameter 'cc'"),
        ("/?since=2022-13-01", "since must be a date"),
        ("/?since=2022-01-05&until=2022-01-01", "since is after until"),
        ("/?since=1&since=2", "given twice"),
        ("/country/KZZ", "two-letter"),
        ("/country/KZ?asn=xx", "asn must be"),
        ("/country/KZ?asn=99999999999", "asn must be"),
        ("/domain/<script>", "domain must be"),
        ("/domain/facebook.com?cc=K1", "cc must be"),
        ("/search?outcome=evil", "outcome must be"),
        ("/search?test_name=DROP%20TABLE", "test_name must"),
        ("/search?page=0", "page must be"),
        ("/search?page=abc", "page must be"),
        ("/search?format=xml", "format must be"),
        ("/search?domain=" + "a" * 300, "longer than"),
        ("/search?domain=x' OR '1'='1", "domain must be"),
        ("/measurement/a%20b%3Cscript%3E", "measurement id"),
    ],
)
def test_bad_parameters_are_a_400_with_a_reason(client: TestClient, url: str, reason: str) -> None:
    r = client.get(url)
    assert r.status_code == 400, r.text
    assert reason in r.text and r.text.count("\n") == 1
    assert r.headers["content-security-policy"] == CSP


def test_unknown_things_are_404_and_nothing_can_be_written(client: TestClient) -> None:
    assert client.get("/measurement/nope").status_code == 404
    assert client.get("/measurement/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/country/ZZ").status_code == 404
    assert client.get("/domain/never.example").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/log-key/" + "0" * 64 + ".pem").status_code == 404
    assert client.post("/search").status_code == 405
    assert client.delete("/measurement/x").status_code == 405


def test_search_paginates_and_exports(client: TestClient) -> None:
    first = client.get("/search?cc=KZ").text
    assert 'rel="next"' in first and 'rel="prev"' not in first
    second = client.get("/search?cc=KZ&page=2").text
    assert 'rel="prev"' in second
    data = client.get("/search?cc=KZ&format=json").json()
    assert len(data["rows"]) == 21 * (2 * 3 + 3) + 1 and not data["truncated"]
    assert {r["probe_cc"] for r in data["rows"]} == {"KZ"}
    rows = list(
        csv.DictReader(io.StringIO(client.get("/search?cc=KZ&outcome=http/reset&format=csv").text))
    )
    assert (
        rows
        and {r["outcome"] for r in rows} == {"http/reset"}
        and {r["probe_asn"] for r in rows} == {"9198"}
    )


def test_overview_and_country_read_only_the_aggregates(
    world: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "pipeline"
    shutil.copytree(world["pipeline"], out)
    app = create_app(out)
    shutil.rmtree(out / "verdicts")
    shutil.rmtree(out / "observations")
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        assert c.get("/country/KZ?since=2022-01-01").status_code == 200


def test_static_export_links_resolve(world: dict[str, Any], tmp_path: Path) -> None:
    site = tmp_path / "site"
    rc = netvigil_main(
        [
            "explorer",
            str(world["pipeline"]),
            "--collector-data",
            str(world["collector"]),
            "--export",
            str(site),
        ]
    )
    assert rc == 0
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").is_file() and (site / "country" / "KZ.html").is_file()
    assert (site / "domain" / "KZ" / "facebook.com.html").is_file()
    uid = world["uids"]["interception"]
    assert (site / "measurement" / f"{uid}.html").is_file()
    assert json.loads((site / "measurement" / f"{uid}.json").read_text())["x_evidence"]
    for p in pages:
        body = p.read_text()
        assert "Content-Security-Policy" in body
        parsed = Page(body)
        for bad in ("script", "iframe", "img"):
            assert bad not in parsed.tags
        for link in parsed.links:
            assert not link.startswith(("/", "http", "javascript")), (p, link)
            target = link.split("#")[0]
            if target:
                assert (p.parent / target).resolve().is_file(), (p, link)


def test_markup_builder_escapes_and_refuses_foreign_links() -> None:
    assert el("p", None, "<b>x</b>") == "<p>&lt;b&gt;x&lt;/b&gt;</p>"
    assert el("a", {"href": "javascript:alert(1)"}, "x") == '<a href="#">x</a>'
    assert el("a", {"title": '"><script>'}, "x") == '<a title="&quot;&gt;&lt;script&gt;">x</a>'
    for bad in (
        "javascript:x",
        "JAVASCRIPT:x",
        "//evil.example/",
        "data:text/html,x",
        "http://x/",
        " /x",
    ):
        assert not url_ok(bad), bad
    for good in ("/country/KZ", "?page=2", "#main", "../index.html", "country/KZ.html"):
        assert url_ok(good), good
    with pytest.raises(AssertionError):
        el("a", {"onclick": "x"})
    assert "\u202e" not in el("p", None, "moc.\u202eevil")


def test_listen_address_is_checked() -> None:
    from netvigil.explorer.cli import _is_loopback, _listen

    assert _listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert _listen("[::1]:9000") == ("::1", 9000)
    assert _is_loopback("127.0.0.1") and not _is_loopback("0.0.0.0")
    for bad in ("8080", "example.org:80", "127.0.0.1:0", "127.0.0.1:99999"):
        with pytest.raises(ValueError):
            _listen(bad)


def test_listening_beyond_loopback_warns(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    served: list[tuple[str, int]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.append((host, port)))
    assert netvigil_main(["explorer", str(world["pipeline"]), "--listen", "0.0.0.0:8099"]) == 0
    assert served == [("0.0.0.0", 8099)]
    assert "WARNING: listening on 0.0.0.0, not loopback" in capsys.readouterr().err
    assert netvigil_main(["explorer", str(world["pipeline"])]) == 0
    assert served[-1] == ("127.0.0.1", 8080)
    assert "WARNING" not in capsys.readouterr().err
    assert netvigil_main(["explorer", str(world["pipeline"]), "--listen", "nope"]) == 2


def test_raw_measurement_from_the_pipeline_inputs(tmp_path: Path) -> None:
    """Without a collector: the raw JSON (and so the chain comparison) from the input files."""
    import datetime as dt

    from explorer_world import hostile_blockpage, interception

    inputs = tmp_path / "in"
    inputs.mkdir()
    fb = interception(dt.datetime(2022, 1, 5, 12, 30, tzinfo=dt.UTC))
    fb["measurement_uid"] = "20220105123000.000000_KZ_webconnectivity_00000000000000aa"
    lines = [json.dumps(fb), json.dumps(hostile_blockpage(dt.datetime(2022, 1, 6, tzinfo=dt.UTC)))]
    (inputs / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert netvigil_main(["pipeline", "run", str(inputs), "--out", str(tmp_path / "out")]) == 0
    app = create_app(tmp_path / "out", None, [inputs])
    with TestClient(app) as c:
        page = c.get(f"/measurement/{fb['measurement_uid']}").text
        assert "Interception: the presented chain beside the real one" in page
        assert "moved 6.0 h earlier" in page and "Not found in a collector" in page
        assert c.get(f"/measurement/{fb['measurement_uid']}.json").json()["test_keys"]
        hostile = c.get("/search?cc=RU&format=json").json()["rows"][0]["measurement_uid"]
        assert hostile.startswith("nv")  # no uid of its own: the pipeline's content hash
        body = c.get(f"/measurement/{hostile}").text
        assert_inert(body)
        assert "ooni.ae_3" in body and "&lt;script&gt;document.title" in body
    bare = create_app(tmp_path / "out")
    with TestClient(bare) as c:
        page = c.get(f"/measurement/{fb['measurement_uid']}").text
        assert "Interception: the presented chain" not in page  # needs the raw measurement


def test_collector_on_postgresql_through_database(
    pg_cluster: Any,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--database DSN: the measurement, its place in the log and a verifying proof, read from a
    collector on PostgreSQL; the DSN (it can hold a password) is in no page and no message."""
    dsn = pg_cluster.new_database()
    world = build_world(tmp_path_factory.mktemp("explorer-pg"), database_url=dsn)
    uid = world["uids"]["interception"]
    assert not (world["collector"] / "collector.sqlite3").exists()  # it is all in PostgreSQL
    with TestClient(create_app(world["pipeline"], database=dsn)) as c:
        r = c.get(f"/measurement/{uid}")
        assert r.status_code == 200
        text = " ".join(Page(r.text).text)
        assert "intercepted" in text and "Qaznet Trust Network" in text
        assert "Inclusion proof verifies" in text and "leaf index" in text
        assert f"netvigil verify {uid}.json --log-key" in text
        doc = c.get(f"/measurement/{uid}.json").json()
        key_link = next(x for x in Page(r.text).links if x.startswith("/log-key/"))
        pem = c.get(key_link).content
        assert verify_measurement(doc, doc["x_evidence"], None, pem).ok
        pages = [r.text, c.get("/").text, c.get("/domain/facebook.com?cc=KZ").text]
        password = str(conninfo_to_dict(dsn)["password"])
        assert not any(password in body or "postgresql://" in body for body in pages)
    # Read-only: the explorer's sessions cannot write.
    from netvigil.explorer.evidence import CollectorDatabase

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        CollectorDatabase(dsn)._conn().execute("DELETE FROM measurements")
    assert "postgresql" not in repr(CollectorDatabase(dsn))
    with psycopg.connect(dsn) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM measurements").fetchone() or (0,)
    assert count == len(world["uids"])

    site = tmp_path_factory.mktemp("site-pg")
    assert (
        netvigil_main(
            ["explorer", str(world["pipeline"]), "--database", dsn, "--export", str(site)]
        )
        == 0
    )
    assert json.loads((site / "measurement" / f"{uid}.json").read_text())["x_evidence"]
    # As for the collector, NETVIGIL_DATABASE_URL keeps the password off the command line.
    monkeypatch.setenv("NETVIGIL_DATABASE_URL", dsn)
    site_env = tmp_path_factory.mktemp("site-pg-env")
    assert netvigil_main(["explorer", str(world["pipeline"]), "--export", str(site_env)]) == 0
    assert json.loads((site_env / "measurement" / f"{uid}.json").read_text())["x_evidence"]
    monkeypatch.delenv("NETVIGIL_DATABASE_URL")
    # One-line errors; neither names the DSN nor its password.
    capsys.readouterr()
    both = ["explorer", str(world["pipeline"]), "--collector-data", str(site), "--database", dsn]
    assert netvigil_main(both) == 2
    password = str(conninfo_to_dict(dsn)["password"])
    secret_dsn = dsn.replace(password, "hunter2-secret")  # refused: a wrong password
    assert netvigil_main(["explorer", str(world["pipeline"]), "--database", secret_dsn]) == 2
    out = capsys.readouterr()
    errors = out.err.strip().splitlines()
    assert errors[0] == "netvigil: --collector-data and --database are mutually exclusive"
    assert errors[1].startswith("netvigil: cannot read the collector database")
    assert len(errors) == 2 and "hunter2" not in out.err + out.out and password not in out.err


def test_the_demo_keeps_its_collectors_log(world: dict[str, Any], tmp_path: Path) -> None:
    """`testbed demo --save` copies the collector's database out of the testbed's state: the
    copy alone gives the explorer the measurement and a verifying proof (and no signing key)."""
    from netvigil.explorer.evidence import CollectorData
    from netvigil.testbed.demo import keep_collector_data

    assert keep_collector_data(tmp_path / "nothing", tmp_path / "kept") is None
    kept = keep_collector_data(world["collector"], tmp_path / "kept")
    assert kept is not None and kept.is_file()
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # no key, no journal
    uid = world["uids"]["interception"]
    logged = CollectorData(kept.parent).logged(uid)
    assert logged is not None and logged.verify is not None and logged.verify.ok
    # again over an older copy: replaced, not appended to
    assert keep_collector_data(world["collector"], tmp_path / "kept") == kept
    assert CollectorData(kept.parent).logged(uid) is not None
