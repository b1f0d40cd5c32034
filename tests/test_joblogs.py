import os
import time

from dreamflow.joblogs import summary_since


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
    folders = {name: tmp_path / name for name in ("a", "b", "missing")}
    found, _ = summary_since(folders, since)
    assert found == ["dreamflow: warning: slow", "dreamflow: warning: short"]


def test_one_line_per_failed_input_with_its_first_error_of_this_run(tmp_path):
    since = time.time() - 10
    good, bad, old = (tmp_path / name / "logs" for name in ("good", "bad", "old"))
    _log(good / "probe.log", "")
    _log(bad / "dream" / "000002.png.log", "dreamflow: error: cannot write x: No space\n")
    _log(bad / "dream" / "000003.png.log", "dreamflow: error: cannot write y: No space\n")
    _log(old / "probe.log", "dreamflow: error: not a video: old.mp4\n", age=3600)
    _, failures = summary_since({"good": good, "bad": bad, "old": old}, since)
    assert failures == [
        f"dreamflow: input bad failed: cannot write x: No space "
        f"(log: {bad / 'dream' / '000002.png.log'}; 1 more failed jobs)"
    ]
