"""Runs killed with SIGKILL, then run again: the next `snakemake` continues (a killed run's stale
Snakemake lock is removed), a live run still keeps a second one out, and whatever the moment of
the kill, the finished frames, blends and video are the bytes of an uninterrupted run, with no
half-written file left behind.

Real Snakemake runs of a small blend chain (two scenes, optical flow), killed as a whole process
group at seeded random moments; some kills take down the model server alone.
"""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
import types

import pytest

from helpers import (
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Workflow,
    assert_says,
    tiny_config,
    write_scene_frames,
)

pytestmark = pytest.mark.workflow

NAME = "tiny"
BLEND = {"mode": "constant", "factor": 0.5, "flow": "dis"}
STALE = "dreamflow: removed a stale lock"
REFUSED = "LockException"
# the short run that CI affords; `pytest -m faults_long` adds the long one
QUICK = {"seed": 12, "scenes": [4, 4], "kills": 20, "segments": None}
LONG = {"seed": 2024, "scenes": [7, 5], "kills": 100, "segments": {"max_chain": 4, "overlap": 1}}
SERVER_IDLE = "30"
SERVER_SHARE = 0.25  # the share of the kills that take the model server down, not the run
START_SHARE = 0.15  # the share of the kills while Snakemake starts, before its locks


class Project(Workflow):
    """A project whose runs can be started in the background and killed, as a user's would be."""

    def __init__(self, directory, scenes, segments):
        super().__init__(directory)
        write_scene_frames(self.path("shots"), scenes)
        blend = {**BLEND, **(segments or {})}
        self.write_config(tiny_config("shots", blend=blend))
        # a server directory of its own: the server to kill is the only one whose pid is there
        self.server_dir = self.directory.parent / "servers"

    def start(self, log="run.log"):
        """Start `snakemake` as Workflow.run does, in a process group of its own (its jobs with it;
        the model server starts a session of its own), its output in the file `log`."""
        environment = {
            **os.environ,
            "DREAMFLOW_SERVER_DIR": str(self.server_dir),
            # kept up between the runs, as a user's rerun finds it; the tests stop it at the end
            "DREAMFLOW_SERVER_IDLE": SERVER_IDLE,
        }
        with open(self.path(log), "wb") as handle:
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        process.log = self.path(log)
        return process

    def result(self, process):
        """The run's output as the helpers' counters read it (Workflow.ran_in_run)."""
        return types.SimpleNamespace(output=process.log.read_text(errors="replace"))

    def locks(self):
        """Snakemake's lock files, each with its inode and times: a run holds its locks from its
        built DAG to the end of its jobs; a killed run's stay until the next run removes them."""
        folder = self.path(".snakemake", "locks")
        found = set()
        for path in folder.glob("*.lock") if folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found.add((path.name, info.st_ino, info.st_mtime_ns, info.st_ctime_ns))
        return found

    def locked(self):
        return bool(self.locks())

    def server_pid(self):
        for pid_file in self.server_dir.glob("*.pid"):
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, 0)
            except (ValueError, OSError):
                continue
            return pid
        return None

    def stop_server(self):
        pid = self.server_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)

    def products(self):
        """{name: bytes} of every dreamed frame, start image and seam, and of every decoded frame
        of the video."""
        work = self.path("work", NAME)
        files = {
            f"{folder}/{path.name}": path.read_bytes()
            for folder in ("dreamed", "blended", "seams")
            for path in sorted(work.joinpath(folder).glob("*.png"))
        }
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", str(self.path("results", NAME, "tiny.mp4"))]
            + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            capture_output=True,
            check=True,
        ).stdout
        frame_bytes = VIDEO_WIDTH * VIDEO_HEIGHT * 3
        for number in range(len(decoded) // frame_bytes):
            files[f"video/{number + 1}"] = decoded[
                number * frame_bytes : (number + 1) * frame_bytes
            ]
        return files

    def strays(self):
        """Half-written files and folders: atomic writes' temporaries, extraction's staging."""
        return sorted(
            str(path.relative_to(self.directory))
            for top in ("work", "results")
            for path in self.path(top).rglob("*")
            if path.name.startswith((".partial-", ".frames-")) or path.name.endswith(".partial")
        )


def wait(process, seconds):
    """Wait up to `seconds` for `process` to end; its return code, None while it still runs."""
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def kill_group(process):
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_locked(project, process, before=frozenset(), deadline=120):
    """Wait until the run has taken locks of its own (other than those in `before`): True, or
    False if it ended first."""
    end = time.monotonic() + deadline
    while not project.locks() - before:
        if process.poll() is not None:
            return False
        assert time.monotonic() < end, "the run never took its lock"
        time.sleep(0.01)
    return True


@pytest.fixture
def killable(tmp_path):
    made = Project(tmp_path / "project", QUICK["scenes"], None)
    yield made
    made.stop_server()


def test_a_run_killed_with_sigkill_is_continued_by_the_next_plain_run(killable):
    process = killable.start()
    try:
        assert wait_until_locked(killable, process), killable.result(process).output
    finally:
        kill_group(process)
    assert killable.locked()  # what Snakemake itself cannot tell from a live run's lock
    process = killable.start()
    returncode = wait(process, 600)
    output = killable.result(process).output
    assert returncode == 0, output
    assert output.count(STALE) == 1 and REFUSED not in output, output
    assert_says(output, STALE)
    assert not killable.locked()


def test_a_job_killed_half_way_through_its_write_leaves_nothing_after_the_next_run(killable):
    folder = killable.path("results", NAME)
    process = killable.start()
    try:
        # the encode job writes the video to a temporary beside it: kill the run right then
        while not (
            folder.is_dir() and any(p.name.startswith(".partial-") for p in folder.iterdir())
        ):
            assert process.poll() is None, "the run ended before the encode was seen"
            time.sleep(0.002)
    finally:
        kill_group(process)
    assert killable.strays() != []
    process = killable.start()
    returncode = wait(process, 600)
    output = killable.result(process).output
    assert returncode == 0, output
    assert "half-written file" in output and killable.strays() == [], output
    assert_says(output, "half-written file")


def test_a_second_run_beside_a_live_one_is_still_refused(killable):
    first = killable.start("first.log")
    try:
        assert wait_until_locked(killable, first), killable.result(first).output
        # stopped, not killed: alive and holding its locks while the second run starts and ends
        os.killpg(first.pid, signal.SIGSTOP)
        second = killable.start("second.log")
        returncode = wait(second, 600)
        output = killable.result(second).output
        assert returncode != 0 and REFUSED in output and STALE not in output, output
        assert killable.locked()
        os.killpg(first.pid, signal.SIGCONT)
        assert wait(first, 600) == 0, killable.result(first).output
    finally:
        kill_group(first)
    assert not killable.locked()


def frame_jobs(project, process):
    """The frame jobs (step, node) that a run started, from its output."""
    result = project.result(process)
    return {
        (verb, node)
        for verb in ("Dreaming", "Blending", "Optical flow", "Crossfading")
        for node in project.ran_in_run(result, verb)
    }


def kill_at_random_moments(tmp_path, seed, scenes, kills, segments):
    """Start runs and kill them at seeded random moments of an uninterrupted run's length, until
    `kills` kills have hit a run at work (its Snakemake locks taken); a run that finishes is
    compared with the uninterrupted one, then all it made is deleted and the next runs start over.
    Returns the figures.

    A moment is drawn over the uninterrupted run's start (up to its locks) or, mostly, over its
    work (from its locks to its end), and counted from the same point of the run to kill: how long
    Snakemake takes to start varies more than the work does, and kills while it starts are cheap
    but test little."""
    victim = Project(tmp_path / "project", scenes, segments)
    process = victim.start()
    assert wait(process, 600) == 0, victim.result(process).output
    expected = victim.products()
    wipe(victim)
    # timed with the model server up, as the runs to kill find it
    started = time.monotonic()
    process = victim.start()
    assert wait_until_locked(victim, process), victim.result(process).output
    start = time.monotonic() - started
    assert wait(process, 600) == 0, victim.result(process).output
    work = time.monotonic() - started - start
    assert victim.products() == expected  # without kills, the same bytes twice
    wipe(victim)

    rng = random.Random(seed)
    names = "kills server_kills idle_kills runs finished recomputed compared"
    figures = dict.fromkeys(names.split(), 0)
    started_before = set()  # the frame jobs that runs started since the last finished run
    try:
        while figures["kills"] + figures["server_kills"] < kills:
            assert figures["runs"] < 20 * kills, figures
            in_start = rng.random() < START_SHARE
            moment = rng.uniform(0, start if in_start else work)
            at_server = rng.random() < SERVER_SHARE
            before = victim.locks()  # a killed run's, which this run must get past
            process = victim.start()
            figures["runs"] += 1
            if in_start or wait_until_locked(victim, process, before):
                returncode = wait(process, moment)
            else:
                returncode = process.wait()
            if returncode is None and not at_server:
                at_work = victim.locks() - before != set()  # this run's own locks
                kill_group(process)
                if process.returncode == -signal.SIGKILL:
                    kind = "kills" if at_work else "idle_kills"
                    figures[kind] += 1
                    trace(
                        figures, moment, kind, note_jobs(figures, started_before, victim, process)
                    )
                    continue
                returncode = process.returncode  # it ended just before the kill
            if returncode is None:  # the server alone: the run goes on, its jobs start another
                pid = victim.server_pid()
                if pid and victim.locks() - before:
                    os.kill(pid, signal.SIGKILL)
                    figures["server_kills"] += 1
                    trace(figures, moment, "server_kills", set())
                returncode = wait(process, 600)
            output = victim.result(process).output
            context = f"seed {seed}, run {figures['runs']}:\n{output[-4000:]}"
            assert returncode == 0, context
            trace(figures, moment, "finished", note_jobs(figures, started_before, victim, process))
            assert victim.strays() == [], context
            made = victim.products()
            assert made.keys() == expected.keys(), context
            differ = [name for name in expected if made[name] != expected[name]]
            assert differ == [], f"{differ} differ from the uninterrupted run; {context}"
            figures["finished"] += 1
            figures["compared"] += len(made)
            started_before = set()
            wipe(victim)
    finally:
        kill_group(process)
        victim.stop_server()
    figures["uninterrupted_seconds"] = f"{start:.1f} + {work:.1f}"
    return figures


def note_jobs(figures, started_before, project, process):
    """Count the frame jobs of this run that a run before it had started already (killed with it,
    or their outputs lost with a kill), and remember them all. Returns them."""
    ran = frame_jobs(project, process)
    figures["recomputed"] += len(ran & started_before)
    started_before |= ran
    return ran


def trace(figures, moment, event, jobs):
    """One line per run, shown with `pytest -s`: what the kills hit."""
    print(f"run {figures['runs']}, {moment:.2f} s: {event}, {len(jobs)} frame jobs started")


def wipe(project):
    """Delete all that a run made, so that the next kills land in every step of the workflow."""
    for top in ("work", "results"):
        shutil.rmtree(project.path(top))


def check_figures(figures, kills):
    print("\nfault injection:", ", ".join(f"{key} {value}" for key, value in figures.items()))
    assert figures["kills"] + figures["server_kills"] >= kills
    assert figures["kills"] >= kills // 2 and figures["server_kills"] >= 1
    assert figures["finished"] >= 2


def test_runs_killed_at_random_moments_finish_with_the_bytes_of_an_uninterrupted_run(tmp_path):
    figures = kill_at_random_moments(tmp_path, **QUICK)
    check_figures(figures, QUICK["kills"])


@pytest.mark.faults_long
def test_many_kills_of_longer_chains_in_segments(request, tmp_path):
    if "faults_long" not in (request.config.option.markexpr or ""):
        pytest.skip("the long fault injection runs with `-m faults_long`")
    figures = kill_at_random_moments(tmp_path, **LONG)
    check_figures(figures, LONG["kills"])
