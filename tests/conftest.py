"""The fixtures shared by the tests: tiny real media and real Snakemake projects; and the skip
of the tests marked `cuda` on a machine without a CUDA GPU.

Everything else the tests share lives in tests/helpers.py; import it from there, never from here.
"""

import pytest

from helpers import Workflow, make_video, tiny_config


@pytest.hookimpl(trylast=True)  # after -m has deselected: `-m "not cuda"` never imports torch
def pytest_collection_modifyitems(config, items):
    """Skip the tests marked `cuda` on a machine without a CUDA GPU."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch  # seconds to import: only when a collected test needs the answer

    if not torch.cuda.is_available():
        for item in marked:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture
def project(tmp_path):
    """An empty project directory to run the real workflow in. Not named `workflow`: that is the
    marker of the slow end-to-end tests."""
    return Workflow(tmp_path)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "tiny.mp4")


def _finished_project(tmp_path_factory, name, blend):
    directory = tmp_path_factory.mktemp(name)
    flow = Workflow(directory)
    make_video(directory / "tiny.mp4")
    flow.write_config(tiny_config("tiny.mp4", blend=blend))
    result = flow.run()
    assert result.returncode == 0, result.output
    return directory


@pytest.fixture(scope="session")
def finished_plain(tmp_path_factory):
    """A completed run without blending; a test that changes it works on a copy_workflow copy."""
    return _finished_project(tmp_path_factory, "plain", {"mode": "none"})


@pytest.fixture(scope="session")
def finished_blend(tmp_path_factory):
    return _finished_project(tmp_path_factory, "blend", {"mode": "constant", "factor": 0.5})
