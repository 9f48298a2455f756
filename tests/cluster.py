"""A real ``manage.py qcluster`` as a subprocess, for the tests that start,
stop or kill the worker cluster (its own session, so a kill of the group
takes its workers, timer and slow cluster with it)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_WAIT_S = 30
WAIT_LIMIT_S = 120


class Output:
    """The cluster's output, read by a thread so that a full pipe never blocks it."""

    def __init__(self, stream):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in iter(stream.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def text(self):
        return "".join(self.lines)


def start_cluster(env):
    """Start ``manage.py qcluster`` with ``env``; its output is in ``.output``."""
    process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    process.output = Output(process.stdout)
    return process


def kill_cluster(process):
    """SIGKILL to the whole process group: the main process, its workers, timer and slow cluster."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def stop_cluster(process, wait_s=STOP_WAIT_S):
    """SIGTERM (the cluster stops its own processes), SIGKILL after
    ``wait_s``; returns how long the cluster took to exit."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        kill_cluster(process)
    return time.monotonic() - began


def wait_for(condition, what, process, limit_s=WAIT_LIMIT_S):
    """Poll ``condition`` until it holds; fail with the cluster's output if it
    exits or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"qcluster exited early:\n{process.output.text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
