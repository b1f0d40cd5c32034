"""A run that was killed (kill -9, a lost terminal, an out-of-memory kill) leaves Snakemake's lock
files behind, and Snakemake cannot tell them from a live run's: they record no process. The next
`snakemake` would stop with "Directory cannot be locked". Its jobs, killed with it, leave the
temporaries of their atomic writes beside their outputs as well.

Every Snakemake main process of the workflow holds a shared flock on RUN_LOCK in the working
directory's .snakemake/ for its whole life; the kernel drops it when the process dies, SIGKILL
included. A run that can take that flock exclusively knows that no other run is alive in the
directory, so any Snakemake lock files there are a dead run's, and so are any temporaries in the
work and results folders: it removes them, then holds its shared flock like the others. A run that
cannot take it leaves everything alone, and Snakemake refuses or allows the run against the live
ones as usual (two runs with disjoint outputs may share a directory).
"""

import contextlib
import fcntl
import os
import shutil
import sys

RUN_LOCK = "dreamflow-run.lock"
SNAKEMAKE_LOCKS = "locks"  # Snakemake's lock files: .snakemake/locks/<n>.input.lock, .output.lock

_held = []  # open descriptors of RUN_LOCK: their flock lasts as long as they stay open


def claim_run(state_dir=".snakemake", output_dirs=(), notes=sys.stderr):
    """Hold this process's share of the run lock in `state_dir` (Snakemake's .snakemake of the
    working directory). If no other run holds it, remove the lock files of a dead run and the
    temporaries its jobs left in `output_dirs` (the work and results folders, where no input may
    be), and say so on `notes`. Returns (lock files, temporaries) removed."""
    os.makedirs(state_dir, exist_ok=True)
    # not inherited by jobs (Python's default): a model server outliving the run must not keep it
    handle = os.open(os.path.join(state_dir, RUN_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False
    except OSError:  # a file system without flock: Snakemake's own locking alone, as before
        os.close(handle)
        return 0, 0
    locks = temporaries = 0
    if alone:
        locks = _remove_locks(os.path.join(state_dir, SNAKEMAKE_LOCKS))
        temporaries = sum(_remove_temporaries(folder) for folder in output_dirs)
    if locks or temporaries:
        print(_removed_line(locks, temporaries), file=notes, flush=True)
    # to shared: other runs may start beside this one; a moment in which another process took the
    # exclusive lock only makes this call wait until it has tidied up (it finds nothing of ours)
    fcntl.flock(handle, fcntl.LOCK_SH)
    _held.append(handle)
    return locks, temporaries


def tidy_after_run(output_dirs=(), notes=sys.stderr):
    """At the end of a run (its jobs all ended), remove the temporaries in `output_dirs` that a job
    or model server killed during the run left behind, if no other run is alive in the directory
    (the jobs of one that is may be writing theirs). Returns the number removed."""
    if not _held:
        return 0
    try:
        # a failed conversion may drop this process's share: harmless, the run is ending
        fcntl.flock(_held[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0
    try:
        temporaries = sum(_remove_temporaries(folder) for folder in output_dirs)
    finally:
        fcntl.flock(_held[-1], fcntl.LOCK_SH)
    if temporaries:
        print(_removed_line(0, temporaries), file=notes, flush=True)
    return temporaries


def _removed_line(locks, temporaries):
    what = ["a stale lock"] if locks else []
    if temporaries:
        what.append(f"{temporaries} half-written file{'s' if temporaries > 1 else ''}")
    by = "a run" if locks else "a job"
    return f"dreamflow: removed {' and '.join(what)} left by {by} that was killed; continuing"


def _remove_locks(folder):
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".lock")]
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        # one left in place (another user's, say) makes Snakemake refuse the run as it would have
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))
            removed += 1
    return removed


def _remove_temporaries(top):
    # imported here: only the main process of a run gets this far, and these modules import PIL
    from .images import TEMPORARY_PREFIX as TEMPORARY_FILE
    from .video import LINKS_PREFIX as TEMPORARY_FOLDER

    removed = 0
    for folder, subfolders, files in os.walk(top):
        for name in [name for name in subfolders if name.startswith(TEMPORARY_FOLDER)]:
            subfolders.remove(name)
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            removed += 1
        for name in files:
            if name.startswith(TEMPORARY_FILE):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed
