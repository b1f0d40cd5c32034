"""What the jobs of a run said that the user should read: their `dreamflow: warning:` lines.

Jobs write to their log files, which Snakemake shows only when a job fails; a warning of a job
that succeeded (a truncated video dreamed as far as it decodes) would go unseen. The workflow
prints these lines once, at the end of the run.
"""

import os

WARNING = "dreamflow: warning: "


def _logs_written_since(folder, since):
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _logs_written_since(entry.path, since)
        elif entry.name.endswith(".log") and entry.stat().st_mtime >= since:
            yield entry.path


def warnings_since(folders, since):
    """The warning lines of the logs under `folders` written at or after `since` (a time.time()),
    in the order of their files' paths, each once."""
    found = []
    for folder in folders:
        for path in sorted(_logs_written_since(folder, since)):
            try:
                with open(path, errors="replace") as handle:
                    lines = [line.rstrip("\n") for line in handle if line.startswith(WARNING)]
            except OSError:
                continue
            found.extend(line for line in lines if line not in found)
    return found
