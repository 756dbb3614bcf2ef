"""A small real STAC API and Range-capable file server on 127.0.0.1, for tests and benchmarks.

It speaks enough of the STAC API for pystac-client (landing page with ``conformsTo``,
``/conformance``, ``/collections/<id>``, ``POST /search`` with ``intersects``/``bbox``,
``datetime``, ``collections``, a CQL2-JSON comparison ``filter`` and paging through ``next``
links) and serves files under ``/files/`` with HTTP Range support, so GDAL reads COGs from it
through ``/vsicurl/``. It can add latency to every request, inject faults (500, 429 with
``Retry-After``, a connection dropped mid-body, a truncated ranged response) and counts the bytes
it sends per file. Nothing here is a mock: it is a real HTTP server on a real socket.

Run it in its own process for benchmarks: ``python -m pipeline.testing.stac_server ROOT
--latency 0.05`` prints ``PORT <n>`` on its first line; ``GET /_stats`` returns its counters as
JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from shapely.geometry import box, shape

FaultKind = Literal["500", "429", "drop", "truncate"]

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


@dataclass
class Fault:
    """Fail the next ``times`` requests whose path contains ``match``.

    Attributes:
        match: Substring of the request path (``/search``, ``/files/B04``...).
        kind: ``500``; ``429`` (with ``Retry-After: retry_after``); ``drop`` (send the headers and
            half the body, then close the connection); ``truncate`` (answer a Range request with a
            consistent but shorter ``206`` body).
        times: How many matching requests fail.
        retry_after: Seconds sent in ``Retry-After`` for ``429``.
    """

    match: str
    kind: FaultKind
    times: int = 1
    retry_after: float = 1.0


@dataclass
class ServerState:
    """Everything the handler threads share (guarded by ``lock``)."""

    files: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_s: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    faults_fired: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match in path:
                    fault.times -= 1
                    self.faults_fired.append(f"{fault.kind} {path}")
                    return fault
        return None

    def count(self, path: str, n: int) -> None:
        with self.lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + n

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "bytes_sent": dict(self.bytes_sent),
                "requests": len(self.requests),
                "searches": sum(
                    1 for r in self.requests if r.split(" ", 1)[-1].startswith("/search")
                ),
                "faults_fired": list(self.faults_fired),
            }

    def control(self, payload: dict[str, Any]) -> None:
        """Apply a ``POST /_control`` body: ``items``, ``collections``, ``faults``,
        ``latency_s`` and ``reset`` (clear the counters), each optional."""
        if payload.get("reset"):
            self.reset()
        with self.lock:
            if "items" in payload:
                self.items = list(payload["items"])
            if "collections" in payload:
                self.collections = dict(payload["collections"])
            if "faults" in payload:
                self.faults = [Fault(**f) for f in payload["faults"]]
            if "latency_s" in payload:
                self.latency_s = float(payload["latency_s"])

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent.clear()
            self.requests.clear()
            self.faults_fired.clear()


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _in_interval(item_dt: str, interval: str | None) -> bool:
    if not interval:
        return True
    start, _, end = interval.partition("/")
    when = _parse_time(item_dt)
    if start not in ("", "..") and when < _parse_time(start):
        return False
    return not (end not in ("", "..") and when > _parse_time(end))


_OPS = {
    "<=": lambda a, b: a <= b,
    "lte": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "lt": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "gte": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "gt": lambda a, b: a > b,
    "=": lambda a, b: a == b,
    "eq": lambda a, b: a == b,
}


def _cql2(expr: dict[str, Any] | None, props: dict[str, Any]) -> bool:
    """Evaluate the comparison subset of CQL2-JSON (``and``, ``<=``...) on item properties."""
    if not expr:
        return True
    op = str(expr.get("op", "")).lower()
    args = expr.get("args", [])
    if op == "and":
        return all(_cql2(a, props) for a in args)
    if op == "or":
        return any(_cql2(a, props) for a in args)
    if op in _OPS and len(args) == 2 and isinstance(args[0], dict) and "property" in args[0]:
        value = props.get(args[0]["property"])
        return value is not None and bool(_OPS[op](value, args[1]))
    raise ValueError(f"unsupported CQL2 expression {expr!r}")


def search_items(state: ServerState, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Items matching a STAC API search body, in a stable order (datetime, id)."""
    geom = None
    if body.get("intersects"):
        geom = shape(body["intersects"])
    elif body.get("bbox"):
        geom = box(*body["bbox"][:4])
    wanted = set(body.get("collections") or [])
    ids = set(body.get("ids") or [])
    out = []
    for item in state.items:
        if wanted and item.get("collection") not in wanted:
            continue
        if ids and item["id"] not in ids:
            continue
        if geom is not None and not geom.intersects(shape(item["geometry"])):
            continue
        if not _in_interval(item["properties"]["datetime"], body.get("datetime")):
            continue
        if not _cql2(body.get("filter"), item["properties"]):
            continue
        out.append(item)
    return sorted(out, key=lambda it: (it["properties"]["datetime"], it["id"]))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    # plumbing ----------------------------------------------------------------------------
    @property
    def state(self) -> ServerState:
        return self.server.state

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str,
        headers: dict[str, str] | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.kind == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _pre(self) -> Fault | None:
        if self.state.latency_s:
            time.sleep(self.state.latency_s)
        with self.state.lock:
            self.state.requests.append(f"{self.command} {self.path}")
        fault = self.state.take_fault(self.path)
        if fault is None:
            return None
        if fault.kind == "500":
            self._send(500, b'{"code":"InternalServerError"}', "application/json")
            return fault
        if fault.kind == "429":
            self._send(
                429,
                b'{"code":"TooManyRequests"}',
                "application/json",
                {"Retry-After": f"{fault.retry_after:g}"},
            )
            return fault
        return fault  # drop / truncate act on the body

    # routes ------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_stats":
            self._json(self.state.stats())
            return
        if path == "/_reset":
            self.state.reset()
            self._json({"ok": True})
            return
        fault = self._pre()
        if fault is not None and fault.kind in ("500", "429"):
            return
        if path.startswith("/files/"):
            self._file(path[len("/files/") :], fault)
        elif path in ("", "/"):
            self._json(self._landing())
        elif path == "/conformance":
            self._json({"conformsTo": CONFORMANCE})
        elif path == "/collections":
            self._json({"collections": list(self.state.collections.values()), "links": []})
        elif path.startswith("/collections/"):
            cid = path.split("/")[2]
            if cid in self.state.collections:
                self._json(self.state.collections[cid])
            else:
                self._json({"code": "NotFound"}, 404)
        else:
            self._json({"code": "NotFound"}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        if self.path == "/_control":
            self.state.control(json.loads(raw.decode().replace("{LOOPBACK}", self._base())))
            self._json({"ok": True})
            return
        fault = self._pre()
        if fault is not None and fault.kind in ("500", "429"):
            return
        if self.path.split("?", 1)[0] != "/search":
            self._json({"code": "NotFound"}, 404)
            return
        body = json.loads(raw or b"{}")
        try:
            matched = search_items(self.state, body)
        except ValueError as err:
            self._json({"code": "BadRequest", "description": str(err)}, 400)
            return
        limit = int(body.get("limit") or 10)
        start = int(body.get("next") or 0)
        page = matched[start : start + limit]
        links: list[dict[str, Any]] = [
            {"rel": "root", "href": self._base() + "/", "type": "application/json"}
        ]
        if start + limit < len(matched):
            links.append(
                {
                    "rel": "next",
                    "href": self._base() + "/search",
                    "method": "POST",
                    "type": "application/geo+json",
                    "merge": True,
                    "body": {"next": str(start + limit)},
                }
            )
        payload = {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(matched),
            "numberReturned": len(page),
        }
        self._send(200, json.dumps(payload).encode(), "application/geo+json", fault=fault)

    def _landing(self) -> dict[str, Any]:
        base = self._base()
        links = [
            {"rel": "self", "href": base + "/", "type": "application/json"},
            {"rel": "root", "href": base + "/", "type": "application/json"},
            {"rel": "conformance", "href": base + "/conformance", "type": "application/json"},
            {"rel": "data", "href": base + "/collections", "type": "application/json"},
            {
                "rel": "search",
                "href": base + "/search",
                "type": "application/geo+json",
                "method": "GET",
            },
            {
                "rel": "search",
                "href": base + "/search",
                "type": "application/geo+json",
                "method": "POST",
            },
        ]
        links += [
            {"rel": "child", "href": f"{base}/collections/{cid}", "type": "application/json"}
            for cid in self.state.collections
        ]
        return {
            "type": "Catalog",
            "id": "loopback",
            "stac_version": "1.0.0",
            "description": "loopback STAC API",
            "conformsTo": CONFORMANCE,
            "links": links,
        }

    def _file(self, rel: str, fault: Fault | None) -> None:
        root = self.state.files.resolve()
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            self._json({"code": "NotFound"}, 404)
            return
        size = target.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if not match:
            data = target.read_bytes()
            self.state.count(rel, 0 if self.command == "HEAD" else len(data))
            self._send(200, data, "image/tiff", {"Accept-Ranges": "bytes"}, fault)
            return
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self._send(416, b"", "image/tiff", {"Content-Range": f"bytes */{size}"})
            return
        with target.open("rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        if fault is not None and fault.kind == "truncate":
            data = data[: max(1, len(data) // 2)]
            end = start + len(data) - 1
        self.state.count(rel, 0 if self.command == "HEAD" else len(data))
        headers = {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{size}"}
        self._send(206, data, "image/tiff", headers, fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class LoopbackServer:
    """A running loopback server: its URL, its shared state, and a way to stop it."""

    server: _Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def state(self) -> ServerState:
        return self.server.state

    def file_url(self, rel: str | Path) -> str:
        """URL of a file under the served folder."""
        return f"{self.url}/files/{Path(rel).as_posix()}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_server(state: ServerState) -> LoopbackServer:
    """Start serving ``state`` on 127.0.0.1 (an ephemeral port) in a daemon thread."""
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, name="loopback-stac", daemon=True)
    thread.start()
    return LoopbackServer(server, thread)


@contextmanager
def serving(state: ServerState) -> Iterator[LoopbackServer]:
    """Context manager around :func:`start_server`."""
    running = start_server(state)
    try:
        yield running
    finally:
        running.stop()


@dataclass
class ServerProcess:
    """A loopback server running in a child process (no GIL shared with GDAL's callers).

    GDAL can block in ``GDALClose`` while holding the GIL until an in-flight HTTP transfer
    ends; an in-process server thread then cannot answer, and the read stalls for the whole HTTP
    timeout. A child process avoids that, and keeps the server's CPU out of benchmark numbers.
    """

    process: subprocess.Popen[str]
    url: str

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def control(self, **payload: Any) -> None:
        """Set ``items``, ``collections``, ``faults`` (dicts of :class:`Fault` fields),
        ``latency_s``, or ``reset=True``; ``{LOOPBACK}`` in documents becomes the server URL."""
        self._call("/_control", payload)

    def stats(self) -> dict[str, Any]:
        """Counters: ``bytes_sent`` per served file, ``requests``, ``searches`` (POST or GET
        ``/search``, pages included), ``faults_fired``."""
        return self._call("/_stats")

    def file_url(self, rel: str | Path) -> str:
        return f"{self.url}/files/{Path(rel).as_posix()}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def spawn_server(root: Path, *, latency_s: float = 0.0) -> ServerProcess:
    """Start ``python -m pipeline.testing.stac_server root`` and wait for its port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.testing.stac_server",
            str(root),
            "--latency",
            str(latency_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"loopback server did not start (said {line!r})")
    return ServerProcess(proc, f"http://127.0.0.1:{line[1]}")


def main(argv: list[str] | None = None) -> None:
    """Serve a folder (and ``items.json`` / ``collections.json`` in it) until killed."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.testing.stac_server")
    parser.add_argument("root", type=Path, help="folder served under /files/")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    args = parser.parse_args(argv)
    state = ServerState(files=args.root, latency_s=args.latency)
    running = start_server(state)
    # documents name the server as {LOOPBACK}: its port is only known now
    for name in ("items", "collections"):
        doc = args.root / f"{name}.json"
        if doc.is_file():
            setattr(state, name, json.loads(doc.read_text().replace("{LOOPBACK}", running.url)))
    print(f"PORT {running.server.server_address[1]}", flush=True)
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
