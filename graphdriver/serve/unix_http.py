"""HTTP/1.1 over a unix socket for plugin servers: a threaded server that can drain, and body streams.

Holds no storage logic. The server counts requests in flight so a shutdown can wait for them; bodies are
read through :class:`BodyReader` (Content-Length or chunked) and streamed replies written through
:class:`ChunkedWriter`.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import GraphDriverError


class SocketInUse(GraphDriverError):
    """Another process already serves on the socket path."""


class BadRequest(Exception):
    """A malformed request: its framing, or a body no method could take. ``status``: the HTTP status the
    reply carries (400; 413 for a body too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_HEX = frozenset(b"0123456789abcdefABCDEF")


def content_length(value: str | None) -> int:
    """A ``Content-Length`` header's value (0 when absent); anything but decimal digits is a framing error
    the connection cannot recover from (RFC 9112, 6.3)."""
    if value is None:
        return 0
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"bad Content-Length {value[:20]!r}")
    return int(value)


class BodyReader(io.RawIOBase):
    """A request body as a readable stream: ``Content-Length`` bytes, or a chunked body decoded."""

    def __init__(self, rfile: BinaryIO, length: int | None, chunked: bool) -> None:
        super().__init__()
        self._rfile = rfile
        self._chunked = chunked
        self._left = 0 if chunked else (length or 0)
        self._done = not chunked and not self._left

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1026)
        if not line.endswith(b"\n"):
            raise BadRequest("truncated chunk header")
        size_field = line.split(b";", 1)[0].strip()
        if not size_field or not _HEX.issuperset(size_field) or len(size_field) > 15:
            raise BadRequest(f"bad chunk size {size_field[:20]!r}")
        size = int(size_field, 16)
        if size == 0:
            while True:  # trailers end with an empty line
                trailer = self._rfile.readline(8192)
                if trailer in (b"\r\n", b"\n", b""):
                    break
            self._done = True
        self._left = size

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._chunked and self._left == 0:
            self._next_chunk()
            if self._done:
                return 0
        want = min(len(buffer), self._left)
        data = self._rfile.read(want) if want else b""
        if len(data) < want or not data:
            raise BadRequest("request body ended early")
        n = len(data)
        buffer[:n] = data
        self._left -= n
        if self._left == 0:
            if self._chunked:
                if self._rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BadRequest("chunk not followed by CRLF")
            else:
                self._done = True
        return n

    def drain(self) -> None:
        """Read and drop what is left of the body (keeps the connection usable)."""
        while self.read(65536):
            pass

    @property
    def finished(self) -> bool:
        """True once the whole body was read."""
        return self._done


class ChunkedWriter:
    """Writes a ``Transfer-Encoding: chunked`` body; :meth:`finish` sends the last chunk."""

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile

    def write(self, data: bytes) -> int:
        if data:
            self._wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        return len(data)

    def finish(self) -> None:
        self._wfile.write(b"0\r\n\r\n")
        self._wfile.flush()


class DrainingUnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection; :meth:`drain` waits until no request is being handled.

    Keep-alive connections idle in their threads between requests; those threads are daemons, so a
    shutdown waits only for requests actually in flight.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False
    #: The listen backlog: the kernel's own cap (net.core.somaxconn) rather than socketserver's 5, which
    #: turns a burst of connects into EAGAIN for clients that dial non-blocking, as Go's do.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler], mode: int = 0o600) -> None:
        self.socket_path = path
        self._in_flight = 0
        self._cond = threading.Condition()
        prepare_socket_path(path)
        old = os.umask(0o777 & ~mode)
        try:
            super().__init__(path, handler)
        finally:
            os.umask(old)
        os.chmod(path, mode)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one request as in flight for the duration of the block."""
        with self._cond:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for requests in flight to finish; False when ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    def stop_listening(self) -> None:
        """Unlink the socket and close the listener: from here new clients are refused at once (a
        connect during a drain would otherwise wait in the backlog, never served). Connections already
        accepted keep being served."""
        self.remove_socket()
        self.server_close()

    def remove_socket(self) -> None:
        """Unlink the socket file (only if it is still ours)."""
        remove_socket(self.socket_path, self._inode)

    def server_bind(self) -> None:
        super().server_bind()
        self._inode = socket_inode(self.socket_path)


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory; remove a stale socket, refuse one that is being served."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover of a crash
        return
    finally:
        probe.close()
    raise SocketInUse(f"{path} is already being served by another process")


def socket_inode(path: str) -> int:
    """The inode of the socket a server just bound at ``path`` (what :func:`remove_socket` checks)."""
    return os.lstat(path).st_ino


def remove_socket(path: str, inode: int) -> None:
    """Unlink the socket at ``path`` if it is still the one bound there (inode ``inode``): a server that
    stops never removes the socket of another that took the path over."""
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
