"""`refinery demo` prints its own lines; everything else the process writes goes to its log."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Run in a process of its own: pytest swaps sys.stdout and catches warnings and log records,
# which would hide what the redirection does to a plain process such as `refinery demo`.
SCRIPT = textwrap.dedent(
    """
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from jobs.demo import output_to

    logging.basicConfig()  # a handler on sys.stderr, as libraries attach theirs
    with output_to(Path(sys.argv[1])) as terminal:
        print("summary line", file=terminal)
        print("python stdout")
        logging.getLogger("lib").warning("a library's record")
        warnings.warn("a warning")
        os.write(2, b"native stderr\\n")  # as C++ code writes, past sys.stderr
        subprocess.run([sys.executable, "-c", "print('child stdout')"], check=True)
    print("after")  # the descriptors are back
    """
)


def test_output_to_sends_every_writer_but_the_summary_to_the_log(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout == "summary line\nafter\n"
    assert result.stderr == ""
    log = log_path.read_text()
    for text in ("python stdout", "a library's record", "a warning", "native stderr", "child"):
        assert text in log
