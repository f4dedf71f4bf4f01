"""A wheel built from the repository installs outside it and works offline (issue 17): the
zoo, the feature network and the presets ship inside, `fashiongen zoo`, `sample --model ddpm`
and the Python API run from a fresh venv in a folder away from the checkout.

The fresh venv has no pip and nothing of this checkout: the wheel goes in with this venv's
pip (`--python`, no index), and the dependencies (torch ...) come from this venv's
site-packages through a path entry, which adds the folder but runs none of its `.pth` files,
so the editable install of the checkout stays out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        source,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("fashiongen-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root
        ).strip()
    )
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=root,
    )
    work = root / "work"
    work.mkdir()
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(root / "cache"),
        "FASHIONGEN_MIRROR": "http://127.0.0.1:9",  # a closed port: no download works
        "PYTHONPATH": "",
        "HOME": str(root),
    }
    return env_dir, env


def test_the_wheel_holds_zoo_featnet_presets_and_types(installed, tmp_path):
    env_dir, env = installed
    out = run(
        env_dir / "bin" / "python",
        "-c",
        "\n".join(
            [
                "import importlib.resources as r, fashiongen",
                "p = r.files('fashiongen')",
                "print(fashiongen.__file__)",
                "print((p / 'py.typed').is_file(), (p / 'featnets' / 'fashion-mnist.safetensors')"
                ".is_file(), (p / 'configs' / 'dcgan-quick.toml').is_file(), "
                "len(fashiongen.zoo_models()))",
            ]
        ),
        cwd=tmp_path,
        env=env,
    ).splitlines()
    assert out[0].startswith(str(env_dir)) and not out[0].startswith(str(REPO))
    flags = out[1].split()
    assert flags[:3] == ["True", "True", "True"] and int(flags[3]) >= 5


def test_the_installed_commands_and_api_work_offline(installed, tmp_path):
    env_dir, env = installed
    assert "ddpm" in run(env_dir / "bin" / "fashiongen", "zoo", cwd=tmp_path, env=env)
    run(
        env_dir / "bin" / "fashiongen",
        "sample",
        "--model",
        "ddpm",
        "--num-samples",
        "4",
        "--out",
        "grid.png",
        cwd=tmp_path,
        env=env,
    )
    assert (tmp_path / "grid.png").stat().st_size > 0
    out = run(
        env_dir / "bin" / "python",
        "-c",
        "import fashiongen; print(fashiongen.load('gan').sample(4).images.shape)",
        cwd=tmp_path,
        env=env,
    )
    assert out.strip() == "(4, 1, 28, 28)"
    assert 'name = "dcgan"' in run(
        env_dir / "bin" / "fashiongen",
        "train",
        "--config",
        "dcgan-quick",
        "--dry-run",
        cwd=tmp_path,
        env=env,
    )
