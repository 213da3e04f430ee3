"""The app served by a real uvicorn in a subprocess, for benchmarks and end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def live_server(
    data_dir: Path,
    *,
    unset: Iterable[str] = (),
    ready_path: str = "/api/health",
    start_timeout: float = 60,
    client_timeout: float = 120,
    **env: str,
) -> Iterator[httpx.Client]:
    """``uvicorn --factory app.main:create_app`` on a free port; stopped on exit.

    The server's output goes to ``server-<port>.log`` beside ``data_dir``.

    Args:
        data_dir: ``FEATUREGAP_DATA_DIR`` of the server.
        unset: Names of environment variables the server must not inherit from this
            process (``env`` may still set them).
        ready_path: The server is up once a GET here answers 200.
        start_timeout: Seconds to wait for that answer.
        client_timeout: Timeout of the yielded client's requests, in seconds.
        **env: Further environment variables for the server (over this process's).

    Yields:
        A client whose ``base_url`` is the server's origin.

    Raises:
        RuntimeError: If the server exits or does not answer within ``start_timeout``.
    """
    port = free_port()
    environment = dict(os.environ)
    for name in unset:
        environment.pop(name, None)
    environment.update({"FEATUREGAP_DATA_DIR": str(data_dir), **env})
    log_path = data_dir.parent / f"server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if process.poll() is not None:
                    output = log_path.read_text(errors="replace")
                    raise RuntimeError(f"server exited with {process.returncode}: {output}")
                try:
                    if httpx.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not answer within {start_timeout:g} s; see {log_path}"
                    )
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=client_timeout) as client:
                yield client
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
