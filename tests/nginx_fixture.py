"""A real nginx with WebDAV PUT, as a shared remote build cache for the tests.

Everything it writes (config, pid, logs, temp files, the served root) stays in
the test's tmp dir, so it runs as any user without touching /etc or /var. It
runs as a single process (master_process off): no worker switching to a user
that can't read the private tmp dir. Under /secure/ it requires
`Authorization: Bearer s3cret`. A missing nginx fails the test: run scripts/setup.sh.
"""

import socket
from contextlib import contextmanager
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NGINX = Path("/usr/sbin/nginx")
TOKEN = "Bearer s3cret"

CONFIG = """
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format requests '$request_method $uri $status';
    access_log {tmp}/access.log requests;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        dav_methods PUT;
        create_full_put_path on;
        client_max_body_size 0;
        location /secure/ {{
            if ($http_authorization != "{token}") {{ return 401; }}
        }}
    }}
}}
"""


@dataclass
class Nginx:
    url: str  # http://127.0.0.1:PORT
    root: Path  # what it serves and where PUTs land
    log: Path

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [(method, path, int(status)) for method, path, status in (line.split() for line in lines)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(CONFIG.format(tmp=tmp, port=port, root=tmp / "root", token=TOKEN))
    process = subprocess.Popen([str(NGINX), "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    return None, port


@contextmanager
def running_nginx(tmp: Path):
    """An nginx serving tmp/root until the block ends (also used by bench/incremental.py)."""
    (tmp / "root").mkdir(parents=True)
    for _ in range(3):  # another process may grab the free port before nginx binds it
        process, port = _start(tmp)
        if process:
            break
    else:
        raise RuntimeError(f"nginx did not start:\n{(tmp / 'error.log').read_text()}")
    try:
        yield Nginx(f"http://127.0.0.1:{port}", tmp / "root", tmp / "access.log")
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def nginx(tmp_path):
    if not NGINX.is_file():
        pytest.fail(f"nginx is not installed ({NGINX} is missing): run scripts/setup.sh, which installs it")
    with running_nginx(tmp_path / "nginx") as server:
        yield server
