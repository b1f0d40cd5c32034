"""Snakemake's report of a real run, rendered in headless Chromium: every result the workflow marks
for it is in the page, with its caption, and opens as what it is (an image the browser decodes, a
video it plays, the settings as JSON); the rule graph renders with Graphviz.

The report is a JavaScript app that draws everything from data embedded in the page, so the test
walks it in the browser (tests/integration/report_probe.js, appended to a copy) and reads back what
was shown over the DevTools protocol (tests/integration/devtools.py).
"""

import json
import re
import shutil
import subprocess
import time

import pytest
from PIL import Image

from helpers import REPO, Workflow, make_video, pattern_array, tiny_config
from integration.devtools import Browser
from integration.services import SUMMARY, unavailable

pytestmark = pytest.mark.integration

SETUP = "run `bash tests/integration/setup-chromium.sh` (as root) to install it"
PROBE = REPO / "tests" / "integration" / "report_probe.js"
WINDOW = "1280,900"


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        unavailable(f"chromium is not installed: {SETUP}")
    return path


@pytest.fixture(scope="session")
def dot():
    path = shutil.which("dot")
    if path is None:
        unavailable(f"graphviz (dot) is not installed: {SETUP}")
    return path


def probed(chromium, report, folder, show=None):
    """What report_probe.js saw of each result of `report`, by result path; with `show`, the page
    ends on that result and a screenshot of it is saved as folder/screenshot.png (the README's
    picture of the report is one)."""
    page = report.read_text(encoding="utf-8")
    # the report's own scripts contain "</body>" in strings: append before the last one, the tag
    head, tag, tail = page.rpartition("</body>")
    probe = folder / "probe.html"
    probe.write_text(f"{head}<script>{PROBE.read_text()}</script>{tag}{tail}", encoding="utf-8")
    url = probe.as_uri() + (f"#{show}" if show else "")
    width, height = (int(n) for n in WINDOW.split(","))
    # real time, with a deadline far above a loaded machine's render: the probe says when it is
    # done, so nothing is cut short while the browser still loads or decodes
    with Browser(
        chromium, "--hide-scrollbars", profile=folder / "profile", deadline=180
    ) as browser:
        tab = browser.open(url, width, height)
        shown = browser.evaluate(tab, "window.reportProbe")
        if show:
            browser.screenshot(tab, folder / "screenshot.png")
    return shown


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of a 6-frame video that blends (so it has a coherence plot; its pairs are of
    frames 1, 3 and 6) and of a single image (one pair), with how long the run took."""
    folder = tmp_path_factory.mktemp("report")
    flow = Workflow(folder)
    make_video(folder / "clip.mp4")
    Image.fromarray(pattern_array(30, 40)).save(folder / "still.png")
    config = tiny_config("clip.mp4", blend={"mode": "constant", "factor": 0.5})
    config["inputs"] = {"clip": {"path": "clip.mp4"}, "still": {"path": "still.png"}}
    flow.write_config(config)
    started = time.monotonic()
    run = flow.run()
    assert run.returncode == 0, run.output
    return flow, time.monotonic() - started


def test_the_report_shows_every_result_with_its_caption(finished, tmp_path, chromium):
    flow, seconds = finished
    ran = time.monotonic()
    made = flow.run("--report", "report.html")
    assert made.returncode == 0, made.output
    reported = time.monotonic()
    shown = probed(chromium, flow.path("report.html"), tmp_path, show="results/clip/clip_pairs.jpg")
    rendered = time.monotonic()

    expected = {
        # a result's figure label names what it is too: these words are the caption's own
        "results/clip/clip.mp4": ("Result", "dreamed video (at the source"),
        "results/clip/clip_pairs.jpg": ("Before and after", "middle and last frame"),
        "results/clip/coherence.png": ("Coherence", "warping error of the dreamed frames"),
        "results/clip/clip_settings.json": ("Settings", "effective settings"),
        "results/still/still.png": ("Result", "for a single image the dreamed image"),
        "results/still/still_pairs.jpg": ("Before and after", "a single image has one row"),
        "results/still/still_settings.json": ("Settings", "effective settings"),
    }
    assert sorted(shown) == sorted(expected)
    for path, (subcategory, caption) in expected.items():
        record, name = shown[path], path.split("/")[1]
        assert (record["category"], record["subcategory"]) == (name, subcategory), record
        assert record["table"].startswith(name), record  # its row: the input, then the figure
        assert caption in " ".join(record["info"].split()), record
        if path.endswith(".json"):
            assert json.loads(record["text"]) == json.loads(flow.path(path).read_text())
            assert json.loads(record["text"])["dream"]["iterations"] == 2
        elif path.endswith(".mp4"):
            assert (record["width"], record["height"]) == (64, 36), record
            assert record["duration"] == pytest.approx(1.0, abs=0.2)
        else:
            with Image.open(flow.path(path)) as image:
                assert (record["width"], record["height"]) == image.size, record
    images = [path for path, record in shown.items() if record["mime"].startswith("image/")]
    videos = [path for path, record in shown.items() if record["mime"].startswith("video/")]
    assert (len(images), len(videos)) == (4, 1)

    with Image.open(tmp_path / "screenshot.png") as screenshot:
        assert screenshot.size == tuple(int(n) for n in WINDOW.split(","))
        assert len(screenshot.convert("RGB").getcolors(1 << 20)) > 50  # drawn, not a blank page
    size = flow.path("report.html").stat().st_size / 1e6
    SUMMARY.append(
        f"report test: workflow {seconds:.1f} s, --report {reported - ran:.1f} s, "
        f"Chromium {rendered - reported:.1f} s, report.html {size:.1f} MB"
    )


def test_the_rule_graph_renders_with_graphviz(finished, dot):
    flow, _ = finished
    graph = flow.run("--rulegraph")
    assert graph.returncode == 0, graph.output
    svg = subprocess.run(
        [dot, "-Tsvg"], input=graph.stdout, capture_output=True, text=True, timeout=60
    )
    assert svg.returncode == 0, svg.stderr
    # a node's label, its rule, is a text element of the drawing
    rules = set(re.findall(r">(\w+)</text>", svg.stdout))
    assert {
        "all",
        "encode",
        "publish_image",
        "coherence",
        "report_pairs",
        "report_settings",
    } <= rules
