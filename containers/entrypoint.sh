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
exec "$@"
