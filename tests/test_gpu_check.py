"""tests/benchmarks/gpu_check.py on a machine without CUDA: its CPU path at tiny sizes, run for
real (pytest, dreams, Snakemake), judged by the table it prints."""

import os
import re
import subprocess
import sys
import time

import pytest

from helpers import REPO

# the check's own limit; its CPU path takes 40-55 s on a 2-core machine, the longer when other
# work shares the cores, and skips what would not fit before it
BUDGET_S = 90
SIZES = ("64x36", "96x54")
PRECISIONS = ("float32", "bfloat16", "float16")


def table(output):
    """The table's rows as dicts by column title, cut at the columns of its heading line."""
    lines = output.splitlines()
    heading = next(index for index, line in enumerate(lines) if line.startswith("part "))
    titles = re.findall(r"\S+(?: \S+)*", lines[heading])
    starts = [lines[heading].index(title) for title in titles]
    rows = []
    for line in lines[heading + 1 :]:
        if not line.strip():
            break
        ends = [*starts[1:], None]
        rows.append(
            {
                title: line[start:end].strip()
                for title, start, end in zip(titles, starts, ends, strict=True)
            }
        )
    return rows


def number(text, unit):
    value, found_unit = text.split(" ", 1)
    assert found_unit == unit, text
    return float(value)


@pytest.mark.workflow
def test_the_gpu_check_runs_its_cpu_path_without_cuda():
    import torch  # here: collecting this module should not cost torch's import

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the GPU path, which needs the check's default budget")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DREAMFLOW_")}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "tests/benchmarks/gpu_check.py", "--budget", str(BUDGET_S)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=BUDGET_S + 60,
    )
    seconds = time.monotonic() - start
    output = result.stdout
    print(output)  # pytest shows it when an assertion fails
    assert result.returncode == 0, output + result.stderr
    assert seconds < BUDGET_S + 10, output  # the budget holds, Python's start aside
    assert "no GPU found: ran the CPU path at tiny sizes; figures say nothing about a GPU" in output
    assert re.search(r"torch \S+; GPU: none; \d+ CPUs; load average [\d.]+ [\d.]+ [\d.]+", output)
    rows = table(output)

    (tests,) = [row for row in rows if row["part"] == "pytest"]
    counts = re.fullmatch(
        r"-m cuda: 0 passed, 0 failed, (\d+) skipped \(needs a CUDA GPU\)", tests["note"]
    )
    assert counts and int(counts.group(1)) > 0, tests

    dreams = [row for row in rows if row["part"] == "dream" and row["model"] != "all"]
    configurations = [
        (row["model"], row["size"], row["precision"], row["channels_last"], row["cudnn_benchmark"])
        for row in dreams
    ]
    assert sorted(configurations) == sorted(
        (model, size, precision, channels_last, "off")
        for model in ("efficientnet_lite0", "googlenet")
        for size in SIZES
        for precision in PRECISIONS
        for channels_last in ("on", "off")
    )
    for row in dreams:
        if row["time"] == "skipped":  # only what the budget could not hold
            assert row["note"].startswith("would not fit"), row
            continue
        assert number(row["time"], "s") > 0 and row["peak GPU memory"] == "n/a", row
        assert float(row["ratio"]) > 0, row
        if (row["precision"], row["channels_last"]) == ("float32", "on"):
            assert row["ratio"] == "1.00", row
    assert sum(row["time"] != "skipped" for row in dreams) >= len(dreams) // 2, output
    (cudnn,) = [row for row in rows if row["model"] == "all"]
    assert cudnn["cudnn_benchmark"] == "on" and cudnn["time"] == "not run"
    assert cudnn["note"] == "cudnn_benchmark has no effect on the CPU"

    (floor,) = [row for row in rows if row["part"] == "floor"]
    floor_seconds = number(floor["time"], "s/frame")
    assert floor_seconds > 0 and floor["ratio"] == "1.00"
    runs = [row for row in rows if row["part"] == "workflow"]
    assert [row["note"].split(",")[0] for row in runs] == ["blend none", "blend constant"]
    for row in runs:
        per_frame = number(row["time"], "s/frame")
        assert per_frame > 0 and row["note"].endswith("3 of 3 frames by the server"), row
        assert float(row["ratio"]) == pytest.approx(per_frame / floor_seconds, rel=0.05), row
