"""The nginx configuration of docs/security.md, exactly as written there, in front of
`vae serve`, all on 127.0.0.1: TLS with a throw-away certificate, the SDK's bytes through the
proxy, per-client rate limiting (429 from nginx once the burst is spent), nginx's own 413 for
a body over its limit, and its header deadline."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from vaesdk.imaging.images import encode_png, make_grid
from webserver import free_port, vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def documented_config() -> str:
    text = (ROOT / "docs" / "security.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/security.md should hold one nginx block"
    return blocks[0]


@pytest.fixture
def proxy(tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light); this test runs the documented proxy config")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    with vae_serve_process("--device", "cpu") as (_, upstream):
        port = free_port()
        conf = documented_config()
        for name, value in {"@PORT@": str(port), "@UPSTREAM@": upstream.removeprefix("http://"), "@CERT@": str(cert),
                            "@KEY@": str(key), "@PREFIX@": str(tmp_path)}.items():  # fmt: skip
            conf = conf.replace(name, value)
        assert "@" not in re.sub(r"#.*", "", conf)
        (tmp_path / "nginx.conf").write_text(conf)
        proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        base = f"https://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"nginx exited: {proc.stderr.read()[-2000:]}"
                assert time.monotonic() < deadline, "nginx did not answer within 30 s"
                try:
                    if httpx.get(f"{base}/healthz", verify=ssl.create_default_context(cafile=str(cert))).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield base, str(cert), port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.nginx
def test_the_documented_nginx_config_in_front_of_vae_serve(proxy, bundled_model):
    base, cert, port = proxy
    with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=cert), timeout=60) as client:
        r = client.post("/v1/models/fashion-mnist/sample", json={"n": 4, "seed": 2})
        assert r.status_code == 200 and r.content == encode_png(make_grid(bundled_model.sample(4, seed=2)))
        assert client.get("/v1/models/fashion-mnist").json()["name"] == "fashion-mnist"

        # nginx answers a body over client_max_body_size itself.
        big = client.post("/v1/models/fashion-mnist/encode", files={"image": ("big.png", b"\0" * (17 * 1024 * 1024))})
        assert big.status_code == 413 and "nginx" in big.text

        # A burst from one client: 20 over the rate pass (burst=20 nodelay), the rest get 429.
        statuses = [client.get("/healthz").status_code for _ in range(60)]
        assert statuses.count(429) >= 20 and set(statuses) <= {200, 429}, statuses

    # TLS is required: plain HTTP to the TLS port gets nginx's 400, never vae serve's answer.
    plain = httpx.get(f"http://127.0.0.1:{port}/healthz")
    assert plain.status_code == 400 and "ok" not in plain.text


@pytest.mark.slow
@pytest.mark.nginx
def test_nginx_closes_a_request_whose_headers_never_finish(proxy):
    base, cert, port = proxy
    context = ssl.create_default_context(cafile=cert)
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(30)  # client_header_timeout is 10 s; a recv still waiting after 30 s fails the test
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert b'"status"' not in data  # closed by nginx (a 408 or nothing), never answered
