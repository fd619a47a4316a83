"""Pages in a real browser for the tests: a stage's server in a subprocess on a free loopback port, and
headless Chromium (through Playwright) to drive it."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing, contextmanager

import pytest


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"
)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(module: str, args: list[str], port: int, timeout: float = 60):
    """Run `python -m module *args --port port` until the block ends; wait for its page to answer first."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            wait_for_page(server, port, timeout, log)
            yield server
        finally:
            server.kill()
            server.wait()


def wait_for_page(server: subprocess.Popen, port: int, timeout: float, log) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    log.seek(0)
    raise AssertionError(
        f"the page on port {port} did not start within {timeout} s:\n{log.read().decode(errors='replace')[-3000:]}"
    )


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
