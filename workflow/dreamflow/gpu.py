"""Whether torch can use the GPU this machine shows, and if not, why and what fixes it.

The one place that decides what `dream.device: auto` warns about, what `dream.device: cuda` stops
with, and what `dreamflow doctor` reports. A GPU counts as shown by NVIDIA device files, an
`nvidia-smi` on PATH, or CUDA_VISIBLE_DEVICES naming devices. Where none of these is there, the
check costs a few stat calls: nvidia-smi runs and torch is imported only when a GPU is shown, and
each process asks once.
"""

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass

# The oldest Linux driver (major version) each CUDA major runs on, with CUDA's minor version
# compatibility (NVIDIA's CUDA compatibility guide, table "CUDA Toolkit 11.x, 12.x, and 13.x")
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
GENERATIONS = {
    5: "Maxwell",
    6: "Pascal",
    7: "Volta",
    8: "Ampere",
    9: "Hopper",
    10: "Blackwell",
    12: "Blackwell",
}
HIDDEN = ("", "-1", "none", "nodevfiles")  # CUDA_VISIBLE_DEVICES values that hide every GPU
SECTION = 'README, "torch builds and drivers"'
SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class Gpu:
    """One line of nvidia-smi: the GPU's name, the driver's version, the compute capability
    ("7.0"; None from drivers too old to report it)."""

    name: str
    driver: str
    capability: str | None


def generation(arch):
    """'sm_75' -> 'sm_75, Turing'."""
    digits = arch.split("_")[-1]
    major, minor = int(digits[:-1]), int(digits[-1])
    name = "Turing" if (major, minor) == (7, 5) else "Ada" if (major, minor) == (8, 9) else None
    name = name or GENERATIONS.get(major)
    return f"{arch}, {name}" if name else arch


def evidence(env=None, device_glob="/dev/nvidia[0-9]*"):
    """What shows a GPU here, in words (empty when nothing does)."""
    env = os.environ if env is None else env
    found = []
    files = sorted(glob.glob(device_glob))
    if files:
        found.append(f"device files {' '.join(files)}")
    if shutil.which("nvidia-smi", path=env.get("PATH")):
        found.append("nvidia-smi on PATH")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() not in HIDDEN:
        found.append(f"CUDA_VISIBLE_DEVICES={visible}")
    return found


def nvidia_smi(env=None):
    """The GPUs nvidia-smi lists ([] without one, or when it fails)."""
    env = os.environ if env is None else env
    command = shutil.which("nvidia-smi", path=env.get("PATH"))
    if not command:
        return []
    # compute_cap came with driver 510; an older nvidia-smi refuses the field, so ask again without
    for fields in ("name,driver_version,compute_cap", "name,driver_version"):
        try:
            result = subprocess.run(
                [command, f"--query-gpu={fields}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=SMI_TIMEOUT_S,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        if result.returncode == 0:
            gpus = []
            for line in result.stdout.splitlines():
                parts = [part.strip() for part in line.split(",")]
                if len(parts) >= 2 and parts[0]:
                    capability = parts[2] if len(parts) > 2 and parts[2][:1].isdigit() else None
                    gpus.append(Gpu(parts[0], parts[1], capability))
            return gpus
    return []


def _major(version):
    try:
        return int(version.split(".")[0])
    except (AttributeError, ValueError):
        return None


def build_line(torch):
    """torch's version, the CUDA it was built for, the driver that needs and its oldest GPU."""
    if not torch.version.cuda:
        return f"torch {torch.__version__}: a CPU-only build"
    needs = MIN_DRIVER.get(_major(torch.version.cuda))
    arches = kernel_arches(torch)
    parts = [f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"]
    if needs:
        parts.append(f"needs NVIDIA driver >= {needs}")
    if arches:
        parts.append(f"oldest GPU {generation(arches[0])} (kernels: {' '.join(arches)})")
    return "; ".join(parts)


def kernel_arches(torch):
    """The GPU architectures this torch has kernels for, oldest first (read from the build, no
    CUDA needed)."""
    try:
        flags = torch._C._cuda_getArchFlags() or ""
    except AttributeError:
        return []
    return sorted(
        (flag for flag in flags.split() if flag.startswith("sm_")),
        key=lambda flag: int(flag.split("_")[1]),
    )


def _too_old_gpu(gpu, arches):
    """The oldest kernel architecture when `gpu` is older than it, else None."""
    if not (gpu.capability and arches):
        return None
    try:
        major, minor = (int(part) for part in gpu.capability.split("."))
    except ValueError:
        return None
    oldest = int(arches[0].split("_")[1])
    return arches[0] if major * 10 + minor < oldest else None


def _torch_says(torch):
    """torch's own words on why CUDA does not start (its init error), one line."""
    try:
        torch.cuda.init()
    except Exception as error:  # torch raises RuntimeError, or AssertionError without CUDA
        return " ".join(str(error).split()).split(" Please ")[0].rstrip(".")
    return None


def diagnose(shown, gpus):
    """(reason, fix) when a GPU is shown (`shown`, from evidence()) but torch cannot use it;
    None when it can. `gpus`: what nvidia-smi lists."""
    import torch

    if not torch.version.cuda:
        return (
            f"torch {torch.__version__} is a CPU-only build",
            f"install a CUDA build of torch (pip's default on x86_64 Linux; {SECTION})",
        )
    build = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
    needs = MIN_DRIVER.get(_major(torch.version.cuda))
    older = [gpu for gpu in gpus if needs and (_major(gpu.driver) or needs) < needs]
    if older:
        return (
            f"the NVIDIA driver {older[0].driver} is too old for {build}, which needs driver "
            f">= {needs}",
            f"update the driver to {needs} or newer, or install a torch built for CUDA 12.x "
            f"(driver >= {MIN_DRIVER[12]}; {SECTION})",
        )
    arches = kernel_arches(torch)
    unsupported = [(gpu, _too_old_gpu(gpu, arches)) for gpu in gpus]
    unsupported = [(gpu, oldest) for gpu, oldest in unsupported if oldest]
    if unsupported and len(unsupported) == len(gpus):
        gpu, oldest = unsupported[0]
        wanted = "sm_" + gpu.capability.replace(".", "")
        return (
            f"no kernel image for the {gpu.name} ({generation(wanted)}) in {build}, whose oldest "
            f"GPU is {generation(oldest)}",
            f"install a torch build with kernels for {wanted} (`dreamflow doctor` lists a "
            f"build's kernels; {SECTION})",
        )
    if torch.cuda.is_available():
        return None
    said = _torch_says(torch)
    torch_said = f" (torch: {said})" if said else ""
    where = " and ".join(shown)
    if not gpus and not any(item.startswith("device files") for item in shown):
        return (
            f"{where}, but this machine has no NVIDIA device files or driver{torch_said}",
            "bind the GPU into the container (`--nv`, `--gpus all`), or unset "
            "CUDA_VISIBLE_DEVICES where there is none",
        )
    return (
        f"{where}, but {build} finds no usable CUDA device{torch_said}",
        f"check `nvidia-smi` and `dreamflow doctor` ({SECTION})",
    )


@functools.cache
def problem():
    """(reason, fix) when this machine shows a GPU that torch cannot use, else None. Asked once
    per process."""
    shown = evidence()
    if not shown:
        return None
    return diagnose(shown, nvidia_smi())


def fallback_warning():
    """The warning of `dream.device: auto` when it dreams on the CPU beside a GPU, else None."""
    found = problem()
    if found is None:
        return None
    reason, fix = found
    return f"dreamflow: warning: dream.device auto dreams on the CPU: {reason}; fix: {fix}"


def run_warning(devices):
    """The fallback warning for a run whose inputs dream on `devices` (dream.device values) when
    one of them is auto, else None."""
    return fallback_warning() if "auto" in devices else None


def cuda_error():
    """Why `dream.device: cuda` cannot run here, as one line, or None when it can."""
    found = problem()
    if found is None:
        return None
    reason, fix = found
    return f"config key dream.device: cuda, but {reason}; fix: {fix}"


def doctor_lines():
    """What `dreamflow doctor` prints: the torch build, whether CUDA is usable and why not, the
    GPUs nvidia-smi lists with the driver."""
    import torch

    shown = evidence()
    gpus = nvidia_smi()
    lines = [build_line(torch)]
    found = diagnose(shown, gpus) if shown else None
    if found:
        reason, fix = found
        lines.append(f"CUDA: not usable: {reason}; fix: {fix}")
    elif not shown:
        lines.append(
            "CUDA: not usable: no GPU seen (no /dev/nvidia* device files, no nvidia-smi on PATH, "
            "no devices in CUDA_VISIBLE_DEVICES)"
        )
    else:
        count = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(index) for index in range(count))
        lines.append(f"CUDA: usable: {count} device{'s' if count != 1 else ''} ({names})")
    for gpu in gpus:
        capability = f", compute capability {gpu.capability}" if gpu.capability else ""
        lines.append(f"GPU: {gpu.name}{capability}, driver {gpu.driver} (nvidia-smi)")
    if not gpus:
        smi = shutil.which("nvidia-smi")
        lines.append("GPU: none listed by nvidia-smi" if smi else "GPU: none (no nvidia-smi)")
    return lines


_warned = []


def warn_once(notes):
    """Print the fallback warning to `notes` the first time this process falls back; the warning
    (or None) either way."""
    warning = fallback_warning()
    if warning and not _warned:
        _warned.append(warning)
        print(warning, file=notes, flush=True)
    return warning
