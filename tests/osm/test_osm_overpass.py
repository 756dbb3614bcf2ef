"""The labels stage against a loopback Overpass server: faults, retries, cache, bad answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import geopandas as gpd
import pytest
from support.osm import OsmBuilder, demo_features

from pipeline.cli import main
from pipeline.errors import FetchError, LabelsError
from pipeline.osm.overpass import OverpassClient, build_query, query_key
from pipeline.paths import RunPaths
from pipeline.stages import labels


@dataclass
class Script:
    """What the server answers, in order; the last entry repeats."""

    actions: list[tuple[str, ...]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


@pytest.fixture
def overpass() -> Iterator[tuple[str, Script, OsmBuilder]]:
    builder = demo_features()
    bodies = {"json": builder.overpass_json(), "xml": builder.overpass_xml()}
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = parse_qs(self.rfile.read(length).decode())
            query = form.get("data", [""])[0]
            script.queries.append(query)
            script.times.append(time.monotonic())
            action = script.actions.pop(0) if len(script.actions) > 1 else script.actions[0]
            if action[0] == "drop":
                self.close_connection = True
                return  # the socket closes without a status line
            if action[0] == "ok":
                fmt = "xml" if "[out:xml]" in query else "json"
                payload = bodies[fmt].encode()
                ctype = "application/osm3s+xml" if fmt == "xml" else "application/json"
                self.send_response(200)
            else:
                payload = action[1].encode() if len(action) > 1 else b"error"
                ctype = "text/html"
                self.send_response(int(action[0]))
                if len(action) > 2:
                    self.send_header("Retry-After", action[2])
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/interpreter", script, builder
    finally:
        server.shutdown()
        server.server_close()


def _cfg(make_cfg, builder: OsmBuilder, url: str, **extra):
    minx, miny, maxx, maxy = builder.bounds()
    return make_cfg(
        source="overpass",
        overpass_url=url,
        backoff_s=0.01,
        timeout_s=5,
        aoi_bbox=[minx - 0.02, miny - 0.02, maxx + 0.02, maxy + 0.02],
        **extra,
    )


def _farms(cfg) -> gpd.GeoDataFrame:
    return gpd.read_file(RunPaths(cfg.run.data_root, cfg.run.name).farms, layer="farms")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_faults_end_with_the_fault_free_polygons(
    overpass, make_cfg, tmp_path: Path, fmt: str
) -> None:
    url, script, builder = overpass
    script.actions = [("ok",)]
    clean = _cfg(make_cfg, builder, url, overpass_format=fmt, overpass_cache=False)
    labels.run(clean, RunPaths(clean.run.data_root, clean.run.name))
    expected = _farms(clean)

    script.actions = [("429", "slow down", "1"), ("504", "gateway timeout"), ("drop",), ("ok",)]
    script.queries.clear()
    script.times.clear()
    faulty = _cfg(make_cfg, builder, url, overpass_format=fmt).model_copy(
        update={"run": clean.run.model_copy(update={"name": "faulty"})}
    )
    out = labels.run(faulty, RunPaths(faulty.run.data_root, faulty.run.name))
    assert len(script.queries) == 4 and len(set(script.queries)) == 1
    assert script.times[1] - script.times[0] >= 0.9  # Retry-After: 1 was honoured
    assert out.summary["from_cache"] is False
    got = _farms(faulty)
    assert list(got["farm_id"]) == list(expected["farm_id"]) and len(got) == 6
    for a, b in zip(expected.geometry, got.geometry, strict=True):
        assert a.equals_exact(b, 1e-9)

    # a re-run reads the cache: the server sees no further request
    again = labels.run(faulty, RunPaths(faulty.run.data_root, faulty.run.name))
    assert len(script.queries) == 4 and again.summary["from_cache"] is True
    cached = faulty.run.data_root / "cache" / "overpass" / f"{query_key(script.queries[0])}.{fmt}"
    assert cached.is_file()


def test_query_asks_for_solar_ways_and_relations_with_geometry() -> None:
    q = build_query((-75.9, 37.4, -75.7, 37.6), timeout_s=60)
    assert q.startswith("[out:json][timeout:60];") and q.rstrip().endswith("out geom;")
    for clause in (
        'way["power"="plant"]["plant:source"="solar"](37.4000000,-75.9000000,',
        'relation["power"="generator"]["generator:source"="solar"]',
        'way["power"="generator"]["generator:method"="photovoltaic"]',
    ):
        assert clause in q
    assert build_query((0, 0, 1, 1)) == build_query((0, 0, 1, 1))  # a stable cache key


def test_unreachable_endpoint_fails_cleanly(make_cfg, tmp_path: Path) -> None:
    client = OverpassClient(
        "http://127.0.0.1:9/api/interpreter", timeout_s=1, retries=2, backoff_s=0.01
    )
    with pytest.raises(FetchError, match="failed 3 time"):
        client.fetch("[out:json];out;", "json")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        f"run: {{name: t, data_root: {tmp_path / 'data'}}}\n"
        "labels: {source: overpass, overpass_url: 'http://127.0.0.1:9/x', retries: 1,\n"
        "         backoff_s: 0.01, aoi_bbox: [-75.8, 37.4, -75.7, 37.5]}\n"
        "fetch: {catalog: unused}\n"
    )
    assert main(["labels", "--config", str(cfg_path)]) != 0
    paths = RunPaths(tmp_path / "data", "t")
    assert not paths.farms.exists() and not paths.plan.exists() and not paths.rejected.exists()


def test_malformed_and_non_retryable_responses(overpass, make_cfg) -> None:
    url, script, builder = overpass
    cfg = _cfg(make_cfg, builder, url)
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    script.actions = [("200", "<html>Overpass is busy</html>")]
    with pytest.raises(LabelsError, match="malformed"):
        labels.run(cfg, paths)
    assert not paths.farms.exists() and not paths.plan.exists()
    assert not list((cfg.run.data_root / "cache" / "overpass").glob("*"))  # never cached
    script.actions = [("400", "parse error: line 1")]
    with pytest.raises(FetchError, match="HTTP 400"):
        labels.run(cfg, paths)
    script.actions = [("200", '{"elements": [], "remark": "runtime error: Query timed out"}')]
    with pytest.raises(FetchError, match="server-side error"):
        labels.run(
            cfg.model_copy(update={"labels": cfg.labels.model_copy(update={"retries": 1})}), paths
        )
    script.actions = [("200", '{"version": 0.6, "elements": []}')]
    with pytest.raises(LabelsError, match="no solar features"):
        labels.run(cfg, paths)
    assert not paths.farms.exists()
