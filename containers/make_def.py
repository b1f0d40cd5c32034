"""Generate containers/dreamflow.def (Apptainer) from containers/Dockerfile with spython.

    .venv/bin/python containers/make_def.py          # rewrite containers/dreamflow.def
    .venv/bin/python containers/make_def.py --stdout # print it instead

The Dockerfile is the one source of truth. spython's conversion is lossy in two ways this script
repairs, always the same way, so the committed file is reproducible and tests/test_containers.py can
regenerate and compare it:
- it puts `cd <WORKDIR>` in front of the runscript: right for Docker, where the project is mounted
  at /work, wrong for Apptainer, which starts in the caller's directory (the project) and binds it;
- it writes Docker's `LABEL key=value` as one word, where Apptainer's %labels wants `key value`;
- it writes the default of a build argument used in FROM into `From:` (and a useless assignment
  into %post), so `--build-arg BASE_IMAGE=...` would change nothing: the argument goes to
  %arguments and `From:` names it (`apptainer build --build-arg`, Apptainer 1.2 or newer).
And one addition: %post keeps its temporary files (TMPDIR) in a folder of the image that it
removes at the end, never in the host's /tmp, which the build may share and which pip fills with
gigabytes of unpacked wheels.
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
POST_TMPDIR = "/opt/dreamflow/tmp"
POST_START = [
    "# temporary files in the image, not in the host's /tmp (removed at the end)",
    f"export TMPDIR={POST_TMPDIR}",
    'mkdir -p "$TMPDIR"',
]
POST_END = [f"rm -rf {POST_TMPDIR}"]


def _global_arguments(dockerfile_text):
    """{name: default} of the ARGs before the first FROM: the ones a FROM line can use."""
    arguments = {}
    for line in dockerfile_text.splitlines():
        words = line.split(None, 1)
        if words and words[0] == "FROM":
            break
        if words and words[0] == "ARG":
            name, _, default = words[1].strip().partition("=")
            arguments[name] = default
    return arguments


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


def _repair(name, lines, workdir, arguments):
    body = lines[1:] if name else lines
    if name in ("runscript", "startscript"):
        body = [line for line in body if line != f"cd {workdir}"]
    if name == "labels":
        body = [line.replace("=", " ", 1).strip() for line in body]
    if name is None:
        defaults = {f"From: {default}": name for name, default in arguments.items()}
        body = [f"From: {{{{ {defaults[line]} }}}}" if line in defaults else line for line in body]
        body += ["%arguments", *(f"{name}={default}" for name, default in arguments.items())]
    if name == "post":
        assignments = {f"{name}={default}" for name, default in arguments.items()}
        body = POST_START + [line for line in body if line not in assignments] + POST_END
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
    arguments = _global_arguments(Path(dockerfile).read_text())
    lines = [
        line
        for name, section in _sections(text)
        for line in _repair(name, section, workdir, arguments)
    ]
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
