"""Write the lock files of the container image: every package its pip installs, pinned with hashes.

    uv pip install uv==0.13.8     (or pip install uv==0.13.8, in any virtualenv)
    python containers/lock.py     # rewrite containers/torch.lock and containers/requirements.lock

The image installs containers/torch.lock (torch, torchvision and everything they pull in: the
CUDA libraries) in one layer and containers/requirements.lock (the rest of pyproject.toml's
dependencies) in the next, both with `pip install --require-hashes --no-deps`, so a build installs
exactly these files or fails. Both are resolved for the image's interpreter, CPython 3.11 on
x86_64 Linux (Debian 12), from PyPI, whatever machine runs this script. Relock after changing
TORCH below or the dependencies in pyproject.toml; tests/test_containers.py fails until then.

Another torch build (e.g. CPU only) comes from another index: `--torch-index-url URL` resolves
torch.lock from that index first and PyPI second. An image built from such a lock must install
from the same index (pip's --index-url in the Dockerfile's torch layer).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
TORCH_LOCK = REPO / "containers" / "torch.lock"
REQUIREMENTS_LOCK = REPO / "containers" / "requirements.lock"
PYPI = "https://pypi.org/simple"
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# torch 2.14.1's CUDA build ships CUDA 13.0 (cuda-toolkit==13.0.3) but admits any cuda-bindings
# and nvJitLink below 14: keep them on 13.0 as well, not on whatever 13.x is newest when locking
CUDA_CONSTRAINTS = ["cuda-bindings~=13.0.3", "nvidia-nvjitlink~=13.0.88"]
# the image: Debian 12's python3 (3.11) on x86_64 with glibc 2.36
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
COMMAND = "python containers/lock.py"


def pyproject_dependencies():
    with open(REPO / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["dependencies"]


def locked(lock_text):
    """{name: version} of the `name==version` lines of a lock file."""
    return dict(
        line.split(" ", 1)[0].split("==", 1)
        for line in lock_text.splitlines()
        if line[:1].isalnum() and "==" in line
    )


def compile_lock(uv, requirements, output, workdir, extra=()):
    source = workdir / f"{output.stem}.in"
    source.write_text("\n".join(requirements) + "\n")
    subprocess.run(
        [
            uv,
            "pip",
            "compile",
            str(source),
            "--output-file",
            str(output),
            "--generate-hashes",
            "--custom-compile-command",
            COMMAND,
            *TARGET,
            *extra,
        ],
        check=True,
        # uv reads no pip.conf; without the caller's UV_* settings, only the indexes named here
        # decide what is locked
        env={key: value for key, value in os.environ.items() if not key.startswith("UV_")},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--torch-index-url",
        metavar="URL",
        help="lock torch and torchvision from this index (another build), then PyPI",
    )
    args = parser.parse_args(argv)
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("lock.py: error: uv is not on PATH: pip install uv==0.13.8")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        indexes = ["--default-index", PYPI]
        if args.torch_index_url:
            indexes += ["--index", args.torch_index_url]
        constraints = workdir / "cuda-constraints.txt"
        constraints.write_text("\n".join(CUDA_CONSTRAINTS) + "\n")
        compile_lock(uv, TORCH, TORCH_LOCK, workdir, [*indexes, "--constraint", str(constraints)])
        # the rest resolves against torch.lock's versions, and leaves out what torch.lock has
        pins = workdir / "torch-pins.txt"
        torch_set = locked(TORCH_LOCK.read_text())
        pins.write_text("".join(f"{name}=={version}\n" for name, version in torch_set.items()))
        skip = [word for name in torch_set for word in ("--no-emit-package", name)]
        compile_lock(
            uv,
            pyproject_dependencies(),
            REQUIREMENTS_LOCK,
            workdir,
            [*indexes, "--constraint", str(pins), *skip],
        )
    for lock in (TORCH_LOCK, REQUIREMENTS_LOCK):
        print(f"wrote {lock.relative_to(REPO)}: {len(locked(lock.read_text()))} packages")


if __name__ == "__main__":
    main()
