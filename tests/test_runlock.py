"""A run's lock on its working directory: what a run removes at its start and at its end, and what
it leaves alone while another run is alive there."""

import fcntl
import io
import os

import pytest

from dreamflow import runlock


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "_held", [])  # this process's claims, as a fresh run's
    (tmp_path / "work" / "clip" / "flow").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    return tmp_path


def half_written(run_dir):
    path = run_dir / "work" / "clip" / "flow" / ".partial-2oenjh2w.npz"
    path.write_bytes(b"half")
    return path


def another_run(run_dir):
    """The shared flock a live run holds on the directory."""
    handle = os.open(run_dir / ".snakemake" / runlock.RUN_LOCK, os.O_RDWR)
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def test_a_run_alone_removes_at_its_end_what_a_killed_server_left_during_it(run_dir):
    notes = io.StringIO()
    runlock.claim_run(run_dir / ".snakemake", notes=notes)
    left = half_written(run_dir)  # after the start: a model server killed while writing it
    kept = run_dir / "work" / "clip" / "flow" / "000002.npz"
    kept.write_bytes(b"done")
    removed = runlock.tidy_after_run((run_dir / "work", run_dir / "results"), notes=notes)
    assert removed == 1 and not left.exists() and kept.exists()
    assert "removed 1 half-written file" in notes.getvalue()


def test_a_run_beside_a_live_one_leaves_its_temporaries_alone(run_dir):
    runlock.claim_run(run_dir / ".snakemake", notes=io.StringIO())
    other = another_run(run_dir)
    try:
        left = half_written(run_dir)  # the other run's job may be writing it now
        assert runlock.tidy_after_run((run_dir / "work",), notes=io.StringIO()) == 0
        assert left.exists()
    finally:
        os.close(other)


def test_a_start_alone_removes_a_dead_runs_locks_and_temporaries(run_dir):
    locks = run_dir / ".snakemake" / runlock.SNAKEMAKE_LOCKS
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("")
    left = half_written(run_dir)
    notes = io.StringIO()
    assert runlock.claim_run(run_dir / ".snakemake", (run_dir / "work",), notes=notes) == (1, 1)
    assert not left.exists() and not list(locks.iterdir())
    assert "a stale lock and 1 half-written file" in notes.getvalue()


def test_a_dry_run_tidies_nothing(run_dir):
    left = half_written(run_dir)  # no claim: a dry run, or a job's own Snakemake
    assert runlock.tidy_after_run((run_dir / "work",), notes=io.StringIO()) == 0
    assert left.exists()
