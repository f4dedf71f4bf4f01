"""Fixtures for the web studio: tiny checkpoints and a served page in a subprocess.

The server runs `fashiongen serve` in a child process under an audit hook
(`sys.addaudithook`, PEP 578) that logs every host the process resolves or connects to, so
tests can assert that the server, like the page, talks to nothing but this machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fashiongen.cli import main
from fashiongen.data.sources import resolve_idx_dir

# the dcgan preset compiles its networks; tiny runs skip it (tests/unit/test_train.py
# tests compiling)
TINY_DCGAN = [
    "--set",
    "train.compile=false",
    "--set",
    "model.g_width=8",
    "--set",
    "model.d_width=8",
    "--no-progress",
]
IMAGE_SHAPE = (1, 28, 28)
SERVER_START_TIMEOUT_S = 90
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}
# Debian's chromium: Playwright drives it and never downloads a browser.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Runs in the server process: log each socket.connect / getaddrinfo host, then serve.
SERVER_SCRIPT = """
import json, sys
log = open(sys.argv[1], "a", buffering=1)
def audit(event, args):
    if event == "socket.getaddrinfo":
        log.write(json.dumps({"event": event, "host": str(args[0])}) + "\\n")
    elif event == "socket.connect" and isinstance(args[1], tuple):
        log.write(json.dumps({"event": event, "host": str(args[1][0])}) + "\\n")
sys.addaudithook(audit)
from fashiongen.cli import main
sys.exit(main(sys.argv[2:]))
"""


def has_fashion_mnist() -> bool:
    return resolve_idx_dir("fashion-mnist") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def saved_checkpoint(folder: Path, model_table: dict) -> Path:
    """An untrained model of any family saved as a checkpoint (milliseconds, no data)."""
    from fashiongen.checkpoint import save_checkpoint
    from fashiongen.config import config_from_dict
    from fashiongen.models import build_model

    cfg = config_from_dict({"model": model_table, "data": {"name": "synthetic"}})
    torch.manual_seed(0)
    model = build_model(cfg.model, IMAGE_SHAPE)
    return save_checkpoint(folder / cfg.model.name, model=model, config=cfg, step=0)


@pytest.fixture
def make_checkpoint(tmp_path):
    """`make_checkpoint({"name": "ddpm", ...})` -> path of an untrained tiny checkpoint."""
    return lambda model_table: saved_checkpoint(tmp_path, model_table)


@pytest.fixture(scope="session")
def conditional_checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained class-conditional DCGAN (10 classes)."""
    return saved_checkpoint(
        tmp_path_factory.mktemp("web-cond"),
        {"name": "dcgan", "g_width": 8, "d_width": 8, "num_classes": 10},
    )


@pytest.fixture(scope="session")
def unconditional_checkpoint(tmp_path_factory) -> Path:
    return saved_checkpoint(
        tmp_path_factory.mktemp("web-uncond"),
        {"name": "dcgan", "g_width": 8, "d_width": 8, "num_classes": 0},
    )


@pytest.fixture(scope="session")
def autoguided_checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained class-conditional DDPM holding its own guide, sampled at scale 2.5."""
    from fashiongen.checkpoint import save_checkpoint
    from fashiongen.config import config_from_dict
    from fashiongen.models import build_model

    cfg = config_from_dict(
        {
            "model": {"name": "ddpm", "base_width": 8, "num_classes": 10},
            "data": {"name": "synthetic"},
            "sample": {"guide_scale": 2.5},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, IMAGE_SHAPE)
    # untrained, its output layer is zero: a guide that differs from it needs other weights
    guide = {k: v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("web-guided") / "guided"
    return save_checkpoint(folder, model=model, config=cfg, step=0, guide=guide)


@pytest.fixture(scope="session")
def fashion_checkpoint(tmp_path_factory) -> Path:
    """A class-conditional DCGAN trained 3 steps on the real Fashion-MNIST."""
    if not has_fashion_mnist():
        pytest.skip("Fashion-MNIST not available (make dataset installs it)")
    out = tmp_path_factory.mktemp("web-fashion") / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "dcgan",
                "--data",
                "fashion-mnist",
                "--max-steps",
                "3",
                "--set",
                "model.num_classes=10",
                "--out",
                str(out),
                *TINY_DCGAN,
            ]
        )
        == 0
    )
    return out


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    audit_log: Path

    def hosts_contacted(self) -> set[str]:
        lines = self.audit_log.read_text().splitlines() if self.audit_log.exists() else []
        return {json.loads(line)["host"] for line in lines}


@pytest.fixture(scope="session")
def server(fashion_checkpoint, tmp_path_factory) -> Iterator[Server]:
    """`fashiongen serve CHECKPOINT` on a free 127.0.0.1 port, in a child process."""
    pytest.importorskip("gradio", reason="the web extra is not installed")
    import httpx

    folder = tmp_path_factory.mktemp("web-server")
    port = free_port()
    audit_log = folder / "connections.jsonl"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio")}
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed after the process ends
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER_SCRIPT,
            str(audit_log),
            "serve",
            str(fashion_checkpoint),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited early: {(folder / 'server.log').read_text()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up in {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield Server(url, process, audit_log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the browser tests skip without /usr/bin/chromium or playwright)."""
    if not CHROMIUM.exists():
        pytest.skip(
            "/usr/bin/chromium missing: `make browser` (or `make test`) installs Debian's chromium"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
