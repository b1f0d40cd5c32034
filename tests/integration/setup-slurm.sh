#!/usr/bin/env bash
# Install what the SLURM integration tests need on Debian 12: munge, the SLURM daemons and client
# (22.05), slurmdbd and mariadb for accounting (Snakemake's SLURM executor asks sacct for job states).
# The executor plugin itself is a Python package in the `slurm` extra, which `test` includes, so
# envs/setup-debian.sh has installed it already. Safe to rerun: it installs only what is missing.
# Nothing is started here: tests/integration/slurm_cluster.sh brings the cluster up and down.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || { echo "no .venv: run envs/setup-debian.sh first" >&2; exit 1; }
.venv/bin/python -c "import snakemake_executor_plugin_slurm" 2>/dev/null ||
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[slurm]"
echo "SLURM integration tests are set up (munge, slurmctld, slurmd, slurmdbd, mariadb, executor plugin)"
