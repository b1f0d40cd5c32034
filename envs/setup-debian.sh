#!/usr/bin/env bash
# Set up dreamflow on Debian 12 (or Ubuntu): system packages first (ffmpeg, python3-venv),
# then a virtualenv in .venv holding the package, its console command and the test tools.
# Safe to rerun: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# An editable install leaves the package uncompiled, and where PYTHONDONTWRITEBYTECODE is set
# every frame job would compile its modules again (about 16 ms a job): compile them once here.
.venv/bin/python -m compileall -q workflow/dreamflow
echo "dreamflow is set up in $(pwd)/.venv"
