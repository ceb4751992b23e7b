"""The `avcc-stream` program leaves as soon as the daemon's command returns.

The daemon's `run` returns only after it has drained and closed its outputs; a worker thread
that is still busy then (a camera stuck opening, a library's pool) must not hold the process
past its stop budget, and nothing written before returning may be lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# A stand-in for the daemon's handler: it logs its last line, leaves a non-daemon thread busy
# for a minute (Python's normal exit would wait for it), and returns STATUS.
PROGRAM = textwrap.dedent("""
    import sys, threading, time
    import avcc_stream.stream.cli as stream_cli
    from avcc_stream.cli import entry

    def busy_run(args):
        threading.Thread(target=time.sleep, args=(60,), daemon=False).start()
        print('{"event": "daemon_stopped"}')  # stdout is block-buffered on a pipe: must be flushed
        return STATUS

    stream_cli._run = busy_run
    sys.argv = ["avcc-stream", "run", "--config", "unused.yaml"]
    entry()
""")


def _run_program(status: int) -> subprocess.CompletedProcess[str]:
    program = PROGRAM.replace("STATUS", str(status))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as under systemd
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=45, env=env)


def test_the_daemon_command_exits_without_waiting_for_busy_threads_and_keeps_its_last_log_line() -> None:
    done = _run_program(0)  # raises TimeoutExpired if the exit waited for the 60 s thread
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith('{"event": "daemon_stopped"}\n')


def test_the_daemon_command_keeps_its_exit_status() -> None:
    done = _run_program(2)
    assert done.returncode == 2, done.stderr
