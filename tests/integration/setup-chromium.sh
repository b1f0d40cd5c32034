#!/usr/bin/env bash
# Install what the report integration test needs on Debian 12: Chromium, which renders Snakemake's
# report headless, and Graphviz, whose `dot` draws the rule graph. Safe to rerun: it installs only
# what is missing.
set -euo pipefail

packages=(chromium graphviz)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if ((${#missing[@]})); then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "Report integration tests are set up ($(chromium --version), dot $(dot -V 2>&1 | awk '{print $5}'))"
