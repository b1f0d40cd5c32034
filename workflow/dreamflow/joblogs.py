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


def lines_since(folder, since, prefix):
    """(log path, line) of the lines starting with `prefix` in the logs under `folder` written at
    or after `since` (a time.time()), in the order of their files' paths."""
    found = []
    for path in sorted(_logs_written_since(folder, since)):
        try:
            with open(path, errors="replace") as handle:
                found.extend(
                    (path, line.rstrip("\n")) for line in handle if line.startswith(prefix)
                )
        except OSError:
            continue
    return found


def warnings_since(folders, since):
    """The warning lines of the logs under `folders` written since `since`, each once."""
    found = []
    for folder in folders:
        for _, line in lines_since(folder, since, WARNING):
            if line not in found:
                found.append(line)
    return found


def failures_since(logs_folders, since):
    """One line per input whose jobs failed since `since`, from `logs_folders` ({input name: its
    logs folder}): the first error of its logs, and the log it is in."""
    failures = []
    for name, folder in logs_folders.items():
        errors = lines_since(folder, since, ERROR)
        if errors:
            path, line = errors[0]
            more = f"; {len(errors) - 1} more failed jobs" if len(errors) > 1 else ""
            failures.append(
                f"dreamflow: input {name} failed: {line[len(ERROR) :]} (log: {path}{more})"
            )
    return failures
