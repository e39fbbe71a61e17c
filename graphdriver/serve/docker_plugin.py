"""Docker's graphdriver plugin protocol (v1, HTTP+JSON on a unix socket) served by a graphdriver Driver.

dockerd (``--experimental --storage-driver=<name>``) finds the plugin as ``/run/docker/plugins/<name>.sock``,
posts ``/Plugin.Activate`` and then ``/GraphDriver.<Method>`` requests. Every JSON reply carries ``Err``
(empty on success); ``Diff`` answers a raw tar stream and ``ApplyDiff?id=&parent=`` receives one.
:class:`GraphDriverPlugin` maps methods onto the Driver; :class:`PluginRequestHandler` is the HTTP side.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from ..checks import option_keys
from ..driver import Driver
from ..errors import DriverUnsupported, GraphDriverError, LayerNotFound, LayerNotMounted
from ..registry import open_driver
from ..store.files import read_json, write_json
from .plugin_config import PluginConfig, parse_opts
from .plugin_request import MAX_JSON_BODY, check_fields, field, printable, string_list, string_map
from .unix_http import BadRequest, BodyReader, ChunkedWriter, DrainingUnixServer, content_length

log = logging.getLogger("graphdriver.serve.docker_plugin")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class PluginNotReady(GraphDriverError):
    """A GraphDriver request arrived before ``GraphDriver.Init``."""


class GraphDriverPlugin:
    """The GraphDriver methods on one Driver, opened (or re-opened for a new home) by ``Init``."""

    def __init__(self, config: PluginConfig, driver: Driver | None = None) -> None:
        self.config = config
        self._driver = driver
        self._init_lock = threading.Lock()

    @property
    def driver(self) -> Driver:
        """The Driver opened by Init (or reopened from the recorded Init after a plugin restart)."""
        if self._driver is None:
            with self._init_lock:
                if self._driver is None:
                    self._driver = self._reopen()
        return self._driver

    def _reopen(self) -> Driver:
        record = read_json(self.config.state_file, None) if self.config.state_file else None
        record = record if isinstance(record, dict) else {}
        root = self.config.root or record.get("Home")
        if not root or not os.path.isdir(root):  # never resurrect a home that is gone
            raise PluginNotReady("GraphDriver.Init has not been called yet")
        log.info("no Init in this process: reopening %s (recorded Init: %s)", root, self.config.state_file)
        return self._open(record.get("Home") or "", record.get("Opts"))

    def _open(self, home: str, opts: list[str] | None) -> Driver:
        root = self.config.root or home
        if not root:
            raise PluginNotReady("GraphDriver.Init gave no Home and the plugin has no --root")
        options = option_keys({**parse_opts(opts), **self.config.options})
        cur = self._driver
        if cur is not None and cur.root == os.path.realpath(root) and cur.options == options:
            return cur
        return open_driver(root, self.config.driver, options)

    # -- JSON methods: body dict in, reply dict out (Err added by the caller) ------------------
    def init(self, req: dict[str, Any]) -> dict[str, Any]:
        home, opts = field(req, "Home"), string_list(req, "Opts")
        if home and not os.path.isabs(home):
            raise BadRequest(f"Home must be an absolute path, not {home!r}")
        if req.get("UIDMaps") or req.get("GIDMaps"):
            raise DriverUnsupported("graphdriver does not support user namespace remapping (UIDMaps/GIDMaps)")
        with self._init_lock:
            self._driver = self._open(home, opts)
            if self.config.state_file:
                os.makedirs(os.path.dirname(self.config.state_file), mode=0o700, exist_ok=True)
                write_json(self.config.state_file, {"Home": home, "Opts": opts})
        return {}

    def create(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._create(req, rw=False)

    def create_read_write(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._create(req, rw=True)

    def _create(self, req: dict[str, Any], rw: bool) -> dict[str, Any]:
        self.driver.create(field(req, "ID"), field(req, "Parent") or None, rw=rw,
                           storage_opt=string_map(req, "StorageOpt"), mount_label=field(req, "MountLabel"))
        return {}

    def remove(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            self.driver.remove(field(req, "ID"))
        except LayerNotFound:
            return {"_note": "absent"}  # dockerd removes idempotently (and after failed creates)
        return {}

    def get(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Dir": self.driver.get(field(req, "ID"), field(req, "MountLabel"))}

    def put(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            self.driver.put(field(req, "ID"))
        except LayerNotMounted:
            return {"_note": "was not mounted"}  # like dockerd's own drivers: Put of an unmounted layer is no error
        return {}

    def exists(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Exists": self.driver.exists(field(req, "ID"))}

    def status(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Status": [[k, v] for k, v in self.driver.status()]}

    def get_metadata(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Metadata": self.driver.metadata(field(req, "ID"))}

    def cleanup(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            driver = self.driver
        except PluginNotReady:
            return {"_note": "nothing opened"}
        for work in driver.cleanup():
            log.info("cleanup left alone %s", work)
        return {}

    def capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Capabilities": {"ReproducesExactDiffs": False}}

    def changes(self, req: dict[str, Any]) -> dict[str, Any]:
        found = self.driver.changes(field(req, "ID"), field(req, "Parent") or None)
        return {"Changes": [{"Path": path, "Kind": int(kind)} for path, kind in found]}

    def diff_size(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Size": int(self.driver.diff_size(field(req, "ID"), field(req, "Parent") or None))}

    # -- stream methods -------------------------------------------------------------------------
    def diff(self, req: dict[str, Any]) -> BinaryIO:
        """The layer's changes as a tar stream (the caller closes it)."""
        return self.driver.diff(field(req, "ID"), field(req, "Parent") or None)

    def apply_diff(self, layer_id: str, parent: str, stream: BinaryIO) -> dict[str, Any]:
        return {"Size": int(self.driver.apply_diff(layer_id, parent or None, stream))}

    def json_methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """``GraphDriver.<Method>`` name to handler, for every JSON-in JSON-out method."""
        return {
            "Init": self.init, "Create": self.create, "CreateReadWrite": self.create_read_write,
            "Remove": self.remove, "Get": self.get, "Put": self.put, "Exists": self.exists,
            "Status": self.status, "GetMetadata": self.get_metadata, "Cleanup": self.cleanup,
            "Capabilities": self.capabilities, "Changes": self.changes, "DiffSize": self.diff_size,
        }


def error_text(method: str, err: BaseException) -> str:
    """One clear line for an ``Err`` field."""
    if isinstance(err, GraphDriverError):
        return str(err)
    if isinstance(err, NotImplementedError):
        return f"graphdriver: {method} is not implemented yet"
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return f"graphdriver: {method}: {err.strerror or err}{where}"
    return f"graphdriver: {method}: {type(err).__name__}: {err}"


class PluginRequestHandler(BaseHTTPRequestHandler):
    """One connection from dockerd (keep-alive); each POST is one plugin call."""

    protocol_version = "HTTP/1.1"
    server: PluginServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (http.server's signature)
        log.debug("http: " + format, *args)

    def do_GET(self) -> None:
        self._reply(405, {"Err": "plugin calls are POST requests"})

    def do_POST(self) -> None:
        with self.server.in_flight():
            self._dispatch()

    # -- plumbing -------------------------------------------------------------------------------
    def _body(self) -> BodyReader:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length = 0 if chunked else content_length(self.headers.get("Content-Length"))
        return BodyReader(self.rfile, length, chunked)

    def _reply(self, code: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        method = url.path.lstrip("/")
        start = time.monotonic()
        plugin = self.server.plugin
        layer_id = ""
        result = "error: no reply"
        try:
            body = self._body()
            if method == "GraphDriver.ApplyDiff":
                query = parse_qs(url.query, keep_blank_values=True)
                layer_id = (query.get("id") or [""])[0]
                parent = (query.get("parent") or [""])[0]
                stream = io.BufferedReader(body, 1 << 20)  # full reads across chunk boundaries
                result = self._call(method, body, lambda: plugin.apply_diff(layer_id, parent, stream))
                return
            req = self._read_json(body)
            layer_id = req["ID"] if isinstance(req.get("ID"), str) else ""
            check_fields(req)
            if method == "Plugin.Activate":
                result = "ok"
                self._reply(200, {"Implements": ["GraphDriver"]})
            elif method == "GraphDriver.Diff":
                result = self._stream_diff(method, req)
            elif method.startswith("GraphDriver.") and method[12:] in plugin.json_methods():
                result = self._call(method, body, lambda: plugin.json_methods()[method[12:]](req))
            else:
                result = "error: unknown method"
                self._reply(404, {"Err": f"graphdriver: unknown plugin method {method!r}"})
        except BadRequest as e:
            result = f"error: {e}"
            self.close_connection = True
            self._reply(e.status, {"Err": f"graphdriver: {printable(method)}: {e}"})
        except Exception as e:  # the connection itself failed (a reply is part of what failed)
            result = f"error: {error_text(method, e)}"
            self.close_connection = True
            log.warning("%s: connection dropped: %s", printable(method), result)
        finally:
            ms = (time.monotonic() - start) * 1000
            log.info("%s id=%s %.1fms %s", printable(method), printable(layer_id or "-"), ms, result)

    def _read_json(self, body: BodyReader) -> dict[str, Any]:
        parts, size = [], 0
        while block := body.read(65536):
            size += len(block)
            if size > MAX_JSON_BODY:
                raise BadRequest(f"request body over {MAX_JSON_BODY} bytes", status=413)
            parts.append(block)
        raw = b"".join(parts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s request body: %s", self.path, raw.decode(errors="replace"))
        if not raw.strip():
            return {}
        try:
            req = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"request body is not JSON ({e})") from None
        if not isinstance(req, dict):
            raise BadRequest(f"request body is a JSON {type(req).__name__}, not an object")
        return req

    def _call(self, method: str, body: BodyReader, fn: Callable[[], dict[str, Any]]) -> str:
        """Run one JSON-replying method; any failure becomes ``Err``."""
        try:
            reply = fn()
            note = reply.pop("_note", "")
            reply["Err"] = ""
            result = f"ok ({note})" if note else "ok"
        except BadRequest:
            raise
        except Exception as e:  # every failure must answer, never hang the connection
            if not isinstance(e, GraphDriverError | NotImplementedError):
                log.warning("%s failed unexpectedly", method, exc_info=True)
            reply = {"Err": error_text(method, e)}
            result = f"error: {reply['Err']}"
        if not body.finished:
            try:
                body.drain()
            except (BadRequest, OSError):
                self.close_connection = True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s reply: %s", method, json.dumps(reply))
        self._reply(200, reply)
        return result

    def _stream_diff(self, method: str, req: dict[str, Any]) -> str:
        """Answer a raw tar stream, or a JSON ``Err`` with status 500 if it cannot start."""
        stream = None
        try:
            stream = self.server.plugin.diff(req)
            block = stream.read(256 * 1024)  # a stream that fails at once is still answered with an Err
        except BadRequest:
            raise
        except Exception as e:
            if stream is not None:
                stream.close()
            err = error_text(method, e)
            self._reply(500, {"Err": err})
            return f"error: {err}"
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            out = ChunkedWriter(self.wfile)
            while block:
                sent += out.write(block)
                block = stream.read(256 * 1024)
            out.finish()
        except Exception as e:
            # Headers are out: end the connection without the last chunk so dockerd sees a broken
            # stream rather than a short, valid-looking tar.
            self.close_connection = True
            log.warning("%s failed after %d bytes: %s", method, sent, error_text(method, e))
            return f"error after {sent} bytes: {error_text(method, e)}"
        finally:
            try:  # puts the mounts a naive diff held; the reply is out either way: log, carry on
                stream.close()
            except Exception as e:
                log.warning("%s: closing the stream failed: %s", method, error_text(method, e))
        return f"ok ({sent} bytes)"


class PluginServer(DrainingUnixServer):
    """The plugin's unix-socket server."""

    def __init__(self, path: str, plugin: GraphDriverPlugin) -> None:
        self.plugin = plugin
        super().__init__(path, PluginRequestHandler)

    def stop(self, timeout: float = 120.0) -> bool:
        """Stop accepting (the socket removed, the listener closed), wait for requests in flight. False if
        requests remain."""
        self.shutdown()
        self.stop_listening()
        return self.drain(timeout)


def serve_until_signal(server: PluginServer, on_ready: Callable[[], None] | None = None) -> bool:
    """Serve in this (main) thread until SIGTERM/SIGINT; then remove the socket and finish in-flight requests.

    Mounts held for running containers stay: dockerd calls ``Put`` for them later. Returns True when
    every request in flight finished.
    """
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: finishing requests in flight, then exiting", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            on_ready()
        server.serve_forever(poll_interval=0.2)
    finally:
        server.stop_listening()  # new clients refused at once, not left in the backlog during the drain
        drained = server.drain(120.0)
        for s, h in previous.items():
            signal.signal(s, h)
    return drained
