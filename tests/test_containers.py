"""containers/dreamflow.def (Apptainer) and containers/Dockerfile describe the same image.

The definition is generated from the Dockerfile (containers/make_def.py, spython plus two repairs);
these tests fail when someone edits one without regenerating the other, or when the conversion
loses a package, a copied file or the entry point. Building either image is the integration tier's
job (tests/integration/test_podman.py); Apptainer itself cannot be installed on these machines.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "containers" / "Dockerfile").read_text()
DEFINITION = (REPO / "containers" / "dreamflow.def").read_text()


def dockerfile_instructions(text):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    return [tuple(line.split(None, 1)) for line in joined.splitlines() if line.strip()]


def definition_sections(text):
    sections, name = {}, None
    for line in text.splitlines():
        match = re.match(r"%(\w+)", line)
        if match:
            name = match.group(1)
            sections[name] = []
        elif name:
            sections[name].append(line)
    return sections


def installed_packages(shell_text):
    """What apt-get and pip install, as sorted lists: the packages an image is made of."""
    shell_text = re.sub(r"\\\n\s*", " ", shell_text)
    apt = re.findall(r"apt-get install ([^&\n]+)", shell_text)
    pip = re.findall(r"pip install ([^&\n]+)", shell_text)

    def words(found):
        # options and shell expansions (the torch index, a build argument) are not packages
        return sorted(
            w for line in found for w in line.split() if not w.startswith(("-", "$", '"$'))
        )

    return words(apt), words(pip)


def test_definition_is_regenerated_from_the_dockerfile():
    result = subprocess.run(
        [sys.executable, str(REPO / "containers" / "make_def.py"), "--stdout"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == DEFINITION, (
        "containers/dreamflow.def is out of date: run .venv/bin/python containers/make_def.py"
    )


def test_both_install_the_same_packages():
    runs = "\n".join(
        args for instruction, args in dockerfile_instructions(DOCKERFILE) if instruction == "RUN"
    )
    post = "\n".join(definition_sections(DEFINITION)["post"])
    apt, pip = installed_packages(runs)
    assert {"python3", "python3-venv", "ffmpeg"} <= set(apt)
    assert "torch==2.14.1" in pip and "torchvision==0.29.1" in pip
    assert installed_packages(post) == (apt, pip)


def test_both_copy_the_same_files():
    copies = [
        args.split()
        for instruction, args in dockerfile_instructions(DOCKERFILE)
        if instruction == "COPY"
    ]
    wanted = sorted((source, destination) for *sources, destination in copies for source in sources)
    files = sorted(
        tuple(line.split()) for line in definition_sections(DEFINITION)["files"] if line.strip()
    )
    assert files == wanted


def test_same_entry_point_and_no_fixed_working_directory_under_apptainer():
    instructions = dict(dockerfile_instructions(DOCKERFILE))
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    # the default command lives in the entry point: spython would otherwise glue CMD in front of
    # "$@"
    assert "CMD" not in instructions
    runscript = [line for line in definition_sections(DEFINITION)["runscript"] if line.strip()]
    assert runscript == [f'exec {" ".join(entrypoint)} "$@"']
    assert instructions["WORKDIR"] == "/work"


def test_both_label_the_image_with_the_package_s_version():
    """The label says which checkout an image goes with: jobs refuse another version's settings."""
    from dreamflow import __version__

    # a regular expression, not tomllib: the package supports Python 3.10
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1) == __version__
    labels = dict(
        word.split("=", 1)
        for command, arguments in dockerfile_instructions(DOCKERFILE)
        if command == "LABEL"
        for word in arguments.split()
    )
    assert labels["org.opencontainers.image.version"] == __version__
    assert (
        f"org.opencontainers.image.version {__version__}"
        in definition_sections(DEFINITION)["labels"]
    )


def test_the_torch_index_is_a_build_argument_that_defaults_to_pypi_in_both():
    """`--build-arg TORCH_INDEX_URL=...` reaches pip's torch line; empty (the default, and what the
    Apptainer definition sets) leaves pip on PyPI, whose build is CUDA 13.0."""
    instructions = dockerfile_instructions(DOCKERFILE)
    torch_run = next(
        i
        for i, (command, args) in enumerate(instructions)
        if command == "RUN" and "torch==" in args
    )
    assert ("ARG", "TORCH_INDEX_URL=") in instructions[:torch_run]
    assert '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}' in instructions[torch_run][1]
    post = [line for line in definition_sections(DEFINITION)["post"] if line.strip()]
    pip = next(
        n
        for n, line in enumerate(post)
        if "pip install" in line and "torch" in " ".join(post[n : n + 2])
    )
    assert "TORCH_INDEX_URL=" in post[:pip]
    assert '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}' in post[pip]
