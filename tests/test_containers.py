"""containers/dreamflow.def (Apptainer) and containers/Dockerfile describe the same image.

The definition is generated from the Dockerfile (containers/make_def.py, spython plus two repairs);
these tests fail when someone edits one without regenerating the other, or when the conversion
loses a package, a copied file or the entry point. Building either image is the integration tier's
job (tests/integration/test_podman.py); Apptainer itself cannot be installed on these machines.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "containers" / "Dockerfile").read_text()
DEFINITION = (REPO / "containers" / "dreamflow.def").read_text()
LOCKS = [REPO / "containers" / "torch.lock", REPO / "containers" / "requirements.lock"]


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
    apt = re.findall(r"apt-get install ([^&;\n]+)", shell_text)
    pip = re.findall(r"pip install ([^&;\n]+)", shell_text)

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
    assert {"/opt/dreamflow/torch.lock", "/opt/dreamflow/requirements.lock"} <= set(pip)
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


def definition_header(text):
    """The `Key: value` lines before the first section."""
    header = text.split("\n%", 1)[0]
    return dict(
        line.split(": ", 1) for line in header.splitlines() if re.match(r"[A-Z]\w*: ", line)
    )


def test_the_base_image_is_pinned_by_digest_and_a_build_argument_of_both():
    instructions = dockerfile_instructions(DOCKERFILE)
    assert instructions[:2] == [("ARG", instructions[0][1]), ("FROM", "${BASE_IMAGE}")]
    name, default = instructions[0][1].split("=", 1)
    assert name == "BASE_IMAGE"
    # a digest alone, no tag: Apptainer's image references refuse both together
    assert re.fullmatch(r"docker\.io/library/debian@sha256:[0-9a-f]{64}", default)
    # Apptainer: `apptainer build --build-arg BASE_IMAGE=...` fills From:, with the same default
    sections = definition_sections(DEFINITION)
    assert definition_header(DEFINITION)["From"] == "{{ BASE_IMAGE }}"
    assert [line for line in sections["arguments"] if line.strip()] == [f"BASE_IMAGE={default}"]
    assert not [line for line in sections["post"] if "BASE_IMAGE" in line]


def test_apptainer_post_writes_nothing_to_the_host_tmp():
    """%post may share the host's /tmp: its temporary files go to a folder of the image."""
    post = [line for line in definition_sections(DEFINITION)["post"] if line.strip()]
    commands = [line for line in post if not line.lstrip().startswith("#")]
    tmpdir = re.fullmatch(r"export TMPDIR=(/\S+)", commands[0]).group(1)
    assert not tmpdir.startswith(("/tmp", "/var/tmp"))
    assert commands[1] == 'mkdir -p "$TMPDIR"'
    assert commands[-1] == f"rm -rf {tmpdir}"
    script = "\n".join(commands)
    assert not re.search(r"(?<![\w/])/(var/)?tmp\b", script), "a command in %post names /tmp"
    pip_installs = re.findall(r"pip install [^&\n]+", script)
    assert pip_installs and all("--no-cache-dir" in found for found in pip_installs)


def read_lock(path):
    """{name: (version, [sha256, ...])} of a `--generate-hashes` requirements file."""
    packages = {}
    for entry in re.sub(r"\\\n\s*", " ", path.read_text()).splitlines():
        if not entry[:1].isalnum():
            continue
        requirement, *options = entry.split()
        name, version = requirement.split("==")
        hashes = [word.removeprefix("--hash=sha256:") for word in options]
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), entry
        packages[name] = (version, hashes)
    return packages


def lock_script():
    spec = importlib.util.spec_from_file_location("lock", REPO / "containers" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_locks_pin_every_package_with_a_hash_and_satisfy_pyproject_and_the_torch_pins():
    torch_lock, requirements_lock = (read_lock(path) for path in LOCKS)
    assert not set(torch_lock) & set(requirements_lock), "a package is locked twice"
    locked = {**torch_lock, **requirements_lock}
    assert all(hashes for _, hashes in locked.values()), "a package without a hash"
    wanted = lock_script()
    for pin in wanted.TORCH + wanted.CUDA_CONSTRAINTS:
        requirement = Requirement(pin)
        assert requirement.specifier.contains(torch_lock[requirement.name][0]), pin
    for dependency in wanted.pyproject_dependencies():
        requirement = Requirement(dependency)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in locked, f"{dependency}: not in a lock: run python containers/lock.py"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"{dependency}: locked {locked[name][0]}: run python containers/lock.py"
        )
    # the image installs both, each exactly as locked or not at all
    installs = [args for command, args in dockerfile_instructions(DOCKERFILE) if command == "RUN"]
    for lock in LOCKS:
        line = next(args for args in installs if f"/opt/dreamflow/{lock.name}" in args)
        assert re.search(
            rf"pip install --no-cache-dir --require-hashes --no-deps -r /opt/dreamflow/{lock.name}",
            line,
        )


def test_the_torch_index_is_a_build_argument_that_defaults_to_the_locked_pypi_build_in_both():
    """`--build-arg TORCH_INDEX_URL=...` reaches pip's torch line; empty (the default, and what the
    Apptainer definition sets) installs the locked PyPI build, whose CUDA is 13.0."""
    instructions = dockerfile_instructions(DOCKERFILE)
    torch_run = next(
        i
        for i, (command, args) in enumerate(instructions)
        if command == "RUN" and "torch==" in args
    )
    assert ("ARG", "TORCH_INDEX_URL=") in instructions[:torch_run]
    run = instructions[torch_run][1]
    locked, chosen = run.split("else", 1)
    assert '-z "$TORCH_INDEX_URL"' in locked and "-r /opt/dreamflow/torch.lock" in locked
    assert '--index-url "$TORCH_INDEX_URL" torch==2.14.1 torchvision==0.29.1' in chosen
    post = "\n".join(line for line in definition_sections(DEFINITION)["post"] if line.strip())
    assert post.index("TORCH_INDEX_URL=") < post.index('-z "$TORCH_INDEX_URL"')
    assert '--index-url "$TORCH_INDEX_URL" torch==2.14.1' in post
