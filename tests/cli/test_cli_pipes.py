"""The command line stops quietly when its reader goes away (`lamina ... | head`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_closed_pipe_gives_no_traceback(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nRUN echo hi\n")
    # A pipe whose reader is gone before lamina writes: every write fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lamina.tui", "debug", "parse", str(dockerfile)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert "BrokenPipeError" not in err, err
    assert proc.returncode == 141
