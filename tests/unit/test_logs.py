"""Server logs: a flood of output is rotated at the cap, and the log folder keeps its newest."""

from __future__ import annotations

import os
import subprocess
import sys

from generator.serve.logs import CappedLog, prune


def test_a_flooding_server_log_is_rotated_at_its_cap(tmp_path):
    log = tmp_path / "tritonserver-x.log"
    flood = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(60000):"
                              " sys.stdout.write('%099d\\n' % i)"], stdout=subprocess.PIPE)
    capped = CappedLog(log, max_bytes=1 << 20)
    capped.follow(flood.stdout)
    assert flood.wait(60) == 0
    capped.wait(30)
    rotated = tmp_path / "tritonserver-x.log.1"
    assert log.stat().st_size <= 1 << 20 and rotated.stat().st_size <= 1 << 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [log.name, rotated.name]
    last = log.read_text().splitlines()[-1]
    assert last == "%099d" % 59999  # the newest output is never the part dropped


def test_the_log_folder_keeps_its_newest_server_logs(tmp_path):
    for i in range(5):
        path = tmp_path / f"tritonserver-{i}.log"
        path.write_text("x")
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "mine.txt").write_text("not a server log")
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "tritonserver-3.log",
                                                          "tritonserver-4.log"]
