#!/bin/sh
# Entry point of the dreamflow image (Docker/Podman ENTRYPOINT, Apptainer runscript).
# Without arguments it runs `snakemake --cores all` in the working directory: /work, where
# `docker run -v "$PWD":/work` mounts the project (Apptainer starts in the caller's directory).
# `snakemake` in a folder without a Snakefile of its own (a folder holding just a config.yaml and
# its inputs) runs the image's copy of the workflow on that folder.
set -e
[ "$#" -gt 0 ] || set -- snakemake --cores all
if [ "$1" = snakemake ] && [ ! -e Snakefile ] && [ ! -e snakefile ] \
    && [ ! -e workflow/Snakefile ] && [ ! -e workflow/snakefile ]; then
    shift
    set -- snakemake --snakefile /opt/dreamflow/src/Snakefile "$@"
fi
# `docker run --user UID:GID` with a uid the image has no account for leaves HOME=/, which only
# root may write, and torch's model cache (TORCH_HOME, default ~/.cache/torch) and Snakemake's
# caches live under HOME. The fallback is in the container's own /tmp rather than the mounted
# project, which it would litter; bind a cache with TORCH_HOME to keep weights between runs.
if [ ! -w "${HOME:-/}" ]; then
    HOME="/tmp/dreamflow-home-$(id -u)"
    mkdir -p -m 700 "$HOME"
    # /tmp may be shared (Apptainer binds the host's): never use a directory someone else made
    if [ ! -O "$HOME" ]; then
        echo "dreamflow: error: HOME fallback $HOME belongs to another user" >&2
        exit 1
    fi
    export HOME
fi
# Such a uid has no name either, and Snakemake asks for one (getpass, which tries USER first)
if [ -z "${USER:-}${LOGNAME:-}" ] && ! id -un >/dev/null 2>&1; then
    USER="$(id -u)"
    export USER
fi
# As PID 1 (docker/podman run without --init) the command would inherit every process that a
# finished job leaves behind, such as a model server, and Snakemake never reaps them: they would
# stay as zombies. tini reaps them and passes signals on. Under `--init` or Apptainer this script
# is not PID 1 and runs the command itself.
if [ "$$" = 1 ] && command -v tini >/dev/null 2>&1; then
    exec tini -- "$@"
fi
exec "$@"
