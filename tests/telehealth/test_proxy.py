"""telehealth/proxy.py: the generated nginx configuration is valid nginx and routes by session.

nginx itself checks every shape (``nginx -t``); the routing it does in front of real daphne
processes is tested in tests/signaling/test_multiprocess.py.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

from signaling.routing import websocket_urlpatterns
from telehealth import proxy
from tests.media.conftest import require_binary

UPSTREAMS = ["127.0.0.1:8001", "127.0.0.1:8002"]


def nginx_accepts(config: Path) -> subprocess.CompletedProcess:
    nginx = require_binary("nginx")
    return subprocess.run(
        [nginx, "-t", "-p", str(config.parent), "-e", str(config.parent / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def inside_http(tmp_path: Path, block: str) -> Path:
    """The http block the way a deployment includes it (conf.d), in a minimal nginx.conf."""
    (tmp_path / "telehealth.conf").write_text(block)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n"
        f"    include {tmp_path}/telehealth.conf;\n}}\n"
    )
    return main


def test_the_session_key_is_the_session_id_of_the_websocket_route():
    # The regex must follow signaling/routing.py: a route renamed there would otherwise spread a
    # session's members over every process without any error.
    session = uuid.uuid4()
    path = "/" + str(websocket_urlpatterns[0].pattern).replace("<uuid:session_id>", str(session))
    match = re.match(proxy.SESSION_PATH, path)
    assert match and match.group(1) == str(session)
    assert not re.match(proxy.SESSION_PATH, "/ws/other/")
    assert f'"~{proxy.SESSION_PATH}" $1;' in proxy.http_block(UPSTREAMS)


def test_the_http_block_is_valid_nginx_and_hashes_sessions_over_every_upstream(tmp_path):
    block = proxy.http_block(UPSTREAMS, listen="127.0.0.1:8443")
    checked = nginx_accepts(inside_http(tmp_path, block))
    assert checked.returncode == 0, checked.stderr
    sessions = block.split("upstream telehealth_sessions {", 1)[1].split("}", 1)[0]
    assert "hash $telehealth_session_key consistent;" in sessions
    assert [line.split()[1] for line in sessions.splitlines() if line.strip().startswith("server ")] == UPSTREAMS
    assert "listen 127.0.0.1:8443;" in block and "ssl" not in block


def test_with_a_certificate_nginx_terminates_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    block = proxy.http_block(UPSTREAMS, listen="443", certificate=str(cert), key=str(key))
    checked = nginx_accepts(inside_http(tmp_path, block))
    assert checked.returncode == 0, checked.stderr
    assert "listen 443 ssl;" in block and f"ssl_certificate {cert};" in block


def test_the_standalone_config_is_valid_nginx(tmp_path):
    config = tmp_path / "nginx.conf"
    config.write_text(proxy.standalone_config(UPSTREAMS, tmp_path, "127.0.0.1:9000"))
    checked = nginx_accepts(config)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"upstreams": []}, "at least one upstream"),
        ({"upstreams": ["127.0.0.1:8001; include /etc/passwd"]}, "cannot hold safely"),
        ({"upstreams": UPSTREAMS, "listen": "80 }"}, "cannot hold safely"),
        ({"upstreams": UPSTREAMS, "certificate": "/etc/cert.pem"}, "both a certificate and its key"),
    ],
)
def test_bad_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        proxy.http_block(**kwargs)


def test_the_command_prints_the_http_block(capsys):
    proxy.main(["--upstream", UPSTREAMS[0], "--upstream", UPSTREAMS[1], "--listen", "8080"])
    assert capsys.readouterr().out == proxy.http_block(UPSTREAMS, "8080")
