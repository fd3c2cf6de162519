"""``convnet visualize --serve``: the page, and nothing else, on 127.0.0.1.

A folder server (``python -m http.server``) is the wrong tool for one page: it lists the folder,
serves every file in it and follows symlinks out of it (a link to ``/`` serves ``/etc``), and it
answers whatever ``Host`` a browser sends, so a web page whose domain is re-pointed at 127.0.0.1
(DNS rebinding) can read what it serves. This server:

- listens on 127.0.0.1 only;
- serves exactly one response, the page, read once when the server starts (a regular file; a
  symlink or a special file is refused): at ``/`` and at ``/<page name>``; every other path is a
  404 with no listing, and no other file is ever opened (the page is self-contained: its
  stylesheet, script and data are inlined, see :mod:`convnet.viz.page`);
- answers only requests whose ``Host`` is ``127.0.0.1:PORT`` or ``localhost:PORT`` (421
  otherwise), and only ``GET`` and ``HEAD`` (405 otherwise);
- sends ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``Cache-Control: no-store``, ``Cross-Origin-Resource-Policy: same-origin``.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from convnet.errors import ConfigError
from convnet.safety import excerpt, read_regular

__all__ = ["HOST", "PageServer", "check_port", "serve"]

HOST = "127.0.0.1"
# Seconds a connection may stay idle before the server drops it (a client that opens sockets
# and sends nothing cannot hold the threads forever).
_TIMEOUT = 30


def check_port(port: Any) -> int:
    """``port`` as an int from 0 (any free port) to 65535, else :class:`ConfigError`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port {excerpt(port, 20)}: a TCP port is a whole number from 1 to "
                          "65535, or 0 for any free port")
    return port


def _read_page(path: Path) -> bytes:
    """The page's bytes: a regular file, not a symlink (``O_NOFOLLOW``), not a FIFO
    (:func:`convnet.safety.read_regular`)."""
    try:
        return read_regular(path, what="page", error=ConfigError, follow_symlinks=False)
    except ConfigError as exc:
        raise ConfigError(f"cannot serve the page: {exc}") from None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = _TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # quiet: the terminal shows the URL once, not every request

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Cross-Origin-Resource-Policy": "same-origin",
            **(extra or {}),
        }
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        return host.lower() in {f"127.0.0.1:{port}", f"localhost:{port}"}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._host_ok():
            # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1.
            self._send(421, b"misdirected request: this server answers only to "
                            b"127.0.0.1:PORT and localhost:PORT\n")
            return
        route = unquote(urlsplit(self.path).path)
        if route in ("/", f"/{self.server.page_name}"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found: this server serves one page, at /\n")

    do_HEAD = do_GET  # noqa: N815 - http.server's naming

    def _refuse_method(self) -> None:
        self._send(405, b"method not allowed: GET or HEAD only\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    page: bytes = b""
    page_name: str = ""


class PageServer:
    """A server for one page on ``127.0.0.1:port``, bound when made (so a port in use is an
    error before a long page is computed) and serving once :meth:`set_page` has been called.

    >>> import tempfile, os, urllib.request
    >>> page = os.path.join(tempfile.mkdtemp(), "r.html")
    >>> _ = open(page, "w").write("<p>hello</p>")
    >>> with PageServer(0) as server:
    ...     server.set_page(page)
    ...     server.start()
    ...     urllib.request.urlopen(server.url).read()
    b'<p>hello</p>'
    """

    def __init__(self, port: int = 8000) -> None:
        port = check_port(port)
        try:
            self.httpd = _Server((HOST, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}; choose "
                              "another --port (0 picks a free one)") from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        name = self.httpd.page_name
        return f"http://{HOST}:{self.port}/{name}"

    def set_page(self, path: str | os.PathLike[str]) -> None:
        """Serve the page at ``path`` (read now, once)."""
        path = Path(path)
        self.httpd.page = _read_page(path)
        self.httpd.page_name = path.name

    def start(self) -> None:
        """Serve in a background thread (for tests and notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def serve_forever(self, announce: Callable[[str], Any] = print) -> None:
        """Serve in this thread until Ctrl-C (which ends it quietly)."""
        announce(f"serving {self.httpd.page_name} at {self.url} (only this page, only to this "
                 "computer; Ctrl-C to stop)")
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve(path: str | os.PathLike[str], port: int = 8000,
          announce: Callable[[str], Any] = print) -> None:  # pragma: no cover - interactive
    """Serve the page at ``path`` on ``127.0.0.1:port`` until Ctrl-C (``port=0``: any free one).

    Only that page is served, only to requests addressed to 127.0.0.1 or localhost (see the
    module's docstring).
    """
    with PageServer(port) as server:
        server.set_page(path)
        server.serve_forever(announce)
