import os
import time

from dreamflow.joblogs import warnings_since


def _log(path, text, age=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


def test_the_warnings_of_logs_written_in_this_run_each_once_in_path_order(tmp_path):
    since = time.time() - 10
    _log(tmp_path / "a" / "logs" / "extract.log", "extracted\ndreamflow: warning: short\n")
    _log(tmp_path / "a" / "logs" / "dream" / "000002.png.log", "dreamflow: warning: slow\n")
    _log(tmp_path / "a" / "logs" / "dream" / "000003.png.log", "dreamflow: warning: slow\n")
    _log(tmp_path / "a" / "logs" / "old.log", "dreamflow: warning: last week\n", age=3600)
    _log(tmp_path / "a" / "logs" / "notes.txt", "dreamflow: warning: not a log\n")
    _log(tmp_path / "b" / "logs" / "probe.log", "fine: no dreamflow: warning: mid-line\n")
    found = warnings_since([tmp_path / "a", tmp_path / "b", tmp_path / "missing"], since)
    assert found == ["dreamflow: warning: slow", "dreamflow: warning: short"]
