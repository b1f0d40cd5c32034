#!/usr/bin/env bash
# Install what the Podman integration tests need on Debian 12 (podman, runc, mmdebstrap), then make
# the local Debian 12 base image they build containers/Dockerfile on, because no image registry is
# reachable from CI. Safe to rerun: it installs only what is missing and keeps an existing base.
# Podman's settings for the tests live in tests/integration/containers.conf (the tests point
# CONTAINERS_CONF at it), so nothing here touches the machine's global container configuration.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_IMAGE=localhost/dreamflow-base:bookworm
export CONTAINERS_CONF="$PWD/tests/integration/containers.conf"

packages=(podman runc mmdebstrap)
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

# The base is what docker.io/library/debian:bookworm-slim is: a minimal Debian 12 with the same apt
# sources; containers/Dockerfile installs everything else itself. ca-certificates is in the base
# because the tests' build bind-mounts the host's CA bundle over its path (TLS is intercepted here),
# and installing the package during the build would try to replace that mounted file.
if ! $sudo env CONTAINERS_CONF="$CONTAINERS_CONF" podman image exists "$BASE_IMAGE"; then
    rootfs=$(mktemp --suffix=.tar)
    trap 'rm -f "$rootfs"' EXIT
    $sudo mmdebstrap --quiet --variant=minbase --include=ca-certificates --format=tar bookworm "$rootfs" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    $sudo env CONTAINERS_CONF="$CONTAINERS_CONF" podman import --quiet \
        --change 'CMD ["/bin/bash"]' "$rootfs" "$BASE_IMAGE" >/dev/null
fi
echo "Podman integration tests are set up (podman, runc, base image $BASE_IMAGE)"
