"""What the jobs of a run said that the user should read at its end: their `dreamflow: warning:`
lines, and per input the `dreamflow: error:` line of a job that failed.

Jobs write to their log files, which Snakemake shows only as it goes (a failed job's) or not at
all (a warning of a job that succeeded, such as a truncated video dreamed as far as it decodes).
A run that keeps going past a failed input ends with many lines of other jobs after the error;
the workflow prints these lines once more, together, at the end of the run.
"""

import os

WARNING = "dreamflow: warning: "
ERROR = "dreamflow: error: "


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


def lines_since(folder, since, prefixes):
    """(log path, line) of the lines starting with one of `prefixes` in the logs under `folder`
    written at or after `since` (a time.time()), in the order of their files' paths."""
    found = []
    for path in sorted(_logs_written_since(folder, since)):
        try:
            with open(path, errors="replace") as handle:
                found.extend(
                    (path, line.rstrip("\n")) for line in handle if line.startswith(prefixes)
                )
        except OSError:
            continue
    return found


def summary_since(logs_folders, since):
    """What a run's jobs said since `since`, from `logs_folders` ({input name: its logs folder}),
    read once: (each warning line once, one line per input whose jobs failed, with the first
    error of its logs and the log it is in)."""
    warnings, failures = [], []
    for name, folder in logs_folders.items():
        found = lines_since(folder, since, (WARNING, ERROR))
        for _, line in found:
            if line.startswith(WARNING) and line not in warnings:
                warnings.append(line)
        errors = [(path, line) for path, line in found if line.startswith(ERROR)]
        if errors:
            path, line = errors[0]
            more = f"; {len(errors) - 1} more failed jobs" if len(errors) > 1 else ""
            failures.append(
                f"dreamflow: input {name} failed: {line[len(ERROR) :]} (log: {path}{more})"
            )
    return warnings, failures
