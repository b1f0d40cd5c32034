"""A GPU this machine shows but torch cannot use, simulated for real: an `nvidia-smi` on PATH that
answers as one on a node with driver 535 does, and CUDA_VISIBLE_DEVICES=0, while torch (a CUDA 13
build here, on a machine without a GPU) finds no CUDA device. `device: auto` says so once per run,
`device: cuda` stops with it, and `dreamflow doctor` reports the build and the driver."""

import glob
import os
import subprocess
import sys

import pytest
import torch

from helpers import (
    TINY_DREAM_OPTIONS,
    Workflow,
    make_video,
    run_dreamflow,
    solid_image,
    tiny_config,
)

# what `nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader` prints on a
# V100 node with the R535 driver
SMI_LINE = "Tesla V100-SXM2-32GB, 535.104.05, 7.0"
FAKE_SMI = f"""#!/bin/sh
case "$*" in
  *--query-gpu=name,driver_version,compute_cap*) echo "{SMI_LINE}" ;;
  *--query-gpu=name,driver_version*) echo "Tesla V100-SXM2-32GB, 535.104.05" ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""
TOO_OLD = (
    f"the NVIDIA driver 535.104.05 is too old for torch {torch.__version__}, built for CUDA "
    f"{torch.version.cuda}, which needs driver >= 580"
)
WARNING = f"dreamflow: warning: dream.device auto dreams on the CPU: {TOO_OLD}; fix: "

pytestmark = pytest.mark.skipif(
    not (torch.version.cuda or "").startswith("13."), reason="needs torch's CUDA 13 build"
)


@pytest.fixture(scope="module")
def old_driver(tmp_path_factory):
    """The environment of a node whose GPU's driver is too old for this torch."""
    folder = tmp_path_factory.mktemp("smi")
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "CUDA_VISIBLE_DEVICES": "0",
    }


def no_gpu():
    """This machine's environment with nothing that shows a GPU, or None where something does."""
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    path = [part for part in env["PATH"].split(os.pathsep) if part]
    if glob.glob("/dev/nvidia[0-9]*") or any(os.path.exists(f"{p}/nvidia-smi") for p in path):
        return None
    return env


def test_doctor_reports_the_build_its_driver_and_that_cuda_is_not_usable():
    env = no_gpu()
    if env is None:
        pytest.skip("this machine shows a GPU")
    result = run_dreamflow("doctor", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda}; needs NVIDIA driver "
        f">= 580; oldest GPU sm_75, Turing (kernels: {' '.join(torch.cuda.get_arch_list())})",
        "CUDA: not usable: no GPU seen (no /dev/nvidia* device files, no nvidia-smi on PATH, no "
        "devices in CUDA_VISIBLE_DEVICES)",
        "GPU: none (no nvidia-smi)",
    ]


def test_doctor_names_the_old_driver_and_the_gpu_nvidia_smi_lists(old_driver):
    result = run_dreamflow("doctor", env=old_driver)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"built for CUDA {torch.version.cuda}; needs NVIDIA driver >= 580" in lines[0]
    assert lines[1].startswith(f"CUDA: not usable: {TOO_OLD}; fix: update the driver to 580")
    assert "CUDA 12.x (driver >= 525" in lines[1]
    assert lines[2:] == [
        "GPU: Tesla V100-SXM2-32GB, compute capability 7.0, driver 535.104.05 (nvidia-smi)"
    ]


def test_a_gpu_named_only_by_cuda_visible_devices_is_not_usable_and_torch_says_why():
    env = no_gpu()
    if env is None:
        pytest.skip("this machine shows a GPU")
    result = run_dreamflow("doctor", env={**env, "CUDA_VISIBLE_DEVICES": "0"})
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[1]
    assert line.startswith(
        "CUDA: not usable: CUDA_VISIBLE_DEVICES=0, but this machine has no NVIDIA device files "
        "or driver (torch: "
    ), line
    assert "bind the GPU into the container" in line


def test_device_cuda_stops_with_one_line_naming_the_driver(old_driver, tmp_path):
    image = solid_image(tmp_path / "in.png", (90, 120, 200))
    result = run_dreamflow(
        "dream",
        image,
        "-o",
        tmp_path / "out.png",
        *TINY_DREAM_OPTIONS,
        "--device",
        "cuda",
        env=old_driver,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dreamflow: error: config key dream.device: cuda, but {TOO_OLD}; fix: update the driver "
        f'to 580 or newer, or install a torch built for CUDA 12.x (driver >= 525; README, "torch '
        'builds and drivers")'
    ]
    assert not (tmp_path / "out.png").exists()


def test_device_auto_warns_once_per_process_and_dreams_on_the_cpu(old_driver):
    script = (
        "from dreamflow.dreamstep import pick_device\n"
        "print([pick_device('auto').type for _ in range(3)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=old_driver
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['cpu', 'cpu', 'cpu']"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), result.stderr


@pytest.mark.workflow
def test_a_run_on_device_auto_warns_once_and_every_frame_log_says_it(old_driver, tmp_path):
    flow = Workflow(tmp_path)
    make_video(tmp_path / "tiny.mp4", audio=False)
    flow.write_config(tiny_config("tiny.mp4"))
    result = flow.run(env=old_driver)
    assert result.returncode == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1, result.output
    assert result.stderr.index(WARNING) < result.stderr.index("Dreaming frame")  # at the start
    # the model server dreamed every frame and handed its warning to each job's log
    logs = sorted(glob.glob(str(tmp_path / "work" / "tiny" / "logs" / "dream" / "*.log")))
    assert len(logs) == flow.dreamed_in_run(result)[-1] > 1
    for log in logs:
        text = open(log).read()
        assert "by the model server" in text and warnings[0] in text.splitlines(), log


@pytest.mark.workflow
def test_a_run_whose_jobs_may_run_elsewhere_warns_once_at_its_end(old_driver, tmp_path):
    # --jobs is how a cluster run starts: its main process may not see the GPU its jobs get, so
    # the jobs' logs tell, once, at the end
    flow = Workflow(tmp_path)
    solid_image(tmp_path / "still.png", (90, 120, 200))
    flow.write_config(tiny_config("still.png"))
    result = flow.run("--jobs", "2", env=old_driver)
    assert result.returncode == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1, result.output
    assert result.stderr.index(WARNING) > result.stderr.rindex("Finished jobid")
