"""`visualize --serve` serves exactly the page, on 127.0.0.1, to requests addressed to it: real
HTTP requests against a real server."""

from __future__ import annotations

import http.client
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet.cli.main import main
from convnet.errors import ConfigError
from convnet.viz.serve import PageServer, check_port

PAGE = b"<!doctype html><title>report</title><p>the page</p>"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The page in a folder that also holds secrets, a symlink to / and a subfolder."""
    d = tmp_path_factory.mktemp("site")
    (d / "report.html").write_bytes(PAGE)
    (d / "secret.txt").write_text("do not serve")
    (d / "root").symlink_to("/")
    (d / "sub").mkdir()
    (d / "sub" / "x.html").write_text("nor this")
    server = PageServer(0)
    server.set_page(d / "report.html")
    server.start()
    yield server
    server.close()


def _get(server, path, host=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if host is not False:
        conn.putheader("Host", f"127.0.0.1:{server.port}" if host is None else host)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_the_page_at_root_and_at_its_name(site):
    for path in ("/", "/report.html", "/report.html?x=1", "/%72eport.html"):
        status, headers, body = _get(site, path)
        assert status == 200 and body == PAGE
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
    status, _, body = _get(site, "/", host=f"localhost:{site.port}")
    assert status == 200 and body == PAGE
    status, headers, body = _get(site, "/", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(PAGE))


@pytest.mark.parametrize("path", [
    "/secret.txt", "/sub/", "/sub/x.html", "/root/etc/hostname", "/root/etc/passwd",
    "/../secret.txt", "/%2e%2e/secret.txt", "/./secret.txt", "//etc/passwd", "/report.html/",
    "/report.html/../secret.txt", "/?", "/sub", "/root", "/index.html",
])
def test_nothing_else_is_served_and_nothing_is_listed(site, path):
    status, _, body = _get(site, path)
    if status == 200:  # only the page itself may ever come back
        assert body == PAGE
    else:
        assert status == 404 and b"do not serve" not in body and b"secret" not in body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
def test_any_path_is_the_page_or_404(site, path):
    status, _, body = _get(site, "/" + path.lstrip("/"))
    assert (status, body) == (200, PAGE) or status in (400, 404)


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1", "127.0.0.1:1",
                                  "attacker.com", "", "127.0.0.1:{port}.evil.com",
                                  "localhost.evil.com:{port}"])
def test_host_header_is_checked_against_dns_rebinding(site, host):
    status, _, body = _get(site, "/", host=host.format(port=site.port))
    assert status == 421 and PAGE not in body
    status, _, body = _get(site, "/", host=False)  # no Host at all
    assert status == 421


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_only_get_and_head(site, method):
    status, headers, _ = _get(site, "/", method=method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_listens_on_loopback_only(site):
    assert site.httpd.server_address[0] == "127.0.0.1"
    outside = [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
               if not a[4][0].startswith("127.")]
    for addr in outside[:1]:
        with pytest.raises(OSError):
            socket.create_connection((addr, site.port), timeout=2).close()


def test_a_symlinked_or_special_page_is_refused(tmp_path):
    (tmp_path / "real.html").write_bytes(PAGE)
    (tmp_path / "link.html").symlink_to(tmp_path / "real.html")
    os.mkfifo(tmp_path / "fifo.html")
    with PageServer(0) as server:
        with pytest.raises(ConfigError, match="symlink"):
            server.set_page(tmp_path / "link.html")
        with pytest.raises(ConfigError, match="FIFO"):
            server.set_page(tmp_path / "fifo.html")


@pytest.mark.parametrize("port", [-1, 65536, 70000, 10**20, "80", 1.5, True, None])
def test_ports_are_validated(port):
    with pytest.raises(ConfigError, match="TCP port"):
        check_port(port)


@pytest.mark.parametrize("port", ["70000", "-1", "http", "1e3", ""])
def test_bad_port_on_the_command_line_fails_before_anything_is_written(tmp_path, capsys, port):
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as e:  # argparse's own exit, before anything runs
        main(["visualize", "digits", "--data", "digits", "-o", str(out), "--serve",
              "--port", port])
    err = capsys.readouterr().err
    assert e.value.code == 2 and not out.exists() and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("convnet visualize: error: argument --port")


def test_a_port_in_use_fails_before_the_page_is_computed(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = tmp_path / "r.html"
        code = main(["visualize", "digits", "--data", "digits", "-o", str(out), "--serve",
                     "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and err.count("\n") == 1
    assert "cannot serve on 127.0.0.1" in err and "--port" in err
