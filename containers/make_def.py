"""Generate containers/dreamflow.def (Apptainer) from containers/Dockerfile with spython.

    .venv/bin/python containers/make_def.py          # rewrite containers/dreamflow.def
    .venv/bin/python containers/make_def.py --stdout # print it instead

The Dockerfile is the one source of truth. spython's conversion is lossy in two ways this script
repairs, always the same way, so the committed file is reproducible and tests/test_containers.py can
regenerate and compare it:
- it puts `cd <WORKDIR>` in front of the runscript: right for Docker, where the project is mounted
  at /work, wrong for Apptainer, which starts in the caller's directory (the project) and binds it;
- it writes Docker's `LABEL key=value` as one word, where Apptainer's %labels wants `key value`.
"""

import argparse
import os
import re
import sys
from pathlib import Path

from spython.main.parse.parsers import DockerParser
from spython.main.parse.writers import SingularityWriter

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "containers" / "Dockerfile"
DEFINITION = REPO / "containers" / "dreamflow.def"
HEADER = (
    "# Generated from containers/Dockerfile by `.venv/bin/python containers/make_def.py`: "
    "edit the\n"
    "# Dockerfile and regenerate, never this file (tests/test_containers.py checks they agree).\n"
    "# Build from the repository root: apptainer build dreamflow.sif containers/dreamflow.def\n"
)


def _sections(text):
    """Split a definition into (name, lines) pairs; the header before the first % has name None."""
    sections = [(None, [])]
    for line in text.splitlines():
        match = re.match(r"%(\w+)", line)
        if match:
            sections.append((match.group(1), [line]))
        else:
            sections[-1][1].append(line)
    return sections


def _repair(name, lines, workdir):
    body = lines[1:] if name else lines
    if name in ("runscript", "startscript"):
        body = [line for line in body if line != f"cd {workdir}"]
    if name == "labels":
        body = [line.replace("=", " ", 1).strip() for line in body]
    return lines[:1] + body if name else body


def definition(dockerfile=DOCKERFILE):
    """The Apptainer definition text for `dockerfile`, repaired as described above."""
    # spython checks COPY sources relative to the working directory: the build context, the repo
    # root
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        parser = DockerParser(str(dockerfile))
        text = SingularityWriter(parser.recipe).convert()
    finally:
        os.chdir(cwd)
    workdir = parser.recipe[list(parser.recipe)[-1]].workdir
    lines = [line for name, section in _sections(text) for line in _repair(name, section, workdir)]
    return HEADER + "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stdout", action="store_true", help="print the definition instead of writing it"
    )
    args = parser.parse_args(argv)
    text = definition()
    if args.stdout:
        sys.stdout.write(text)
    else:
        DEFINITION.write_text(text)
        print(f"wrote {DEFINITION.relative_to(REPO)}")


if __name__ == "__main__":
    main()
