"""Worker processes of ``manage.py listen --workers N`` (N of 2 or more).

The listener process reads batches from Kafka and splits each by uid (a
uid's messages stay in order on one worker); each part goes down a pipe to
one worker process, which applies it in one database transaction (each
message in a savepoint, ``alerts.listen.apply_part``) and answers with the
outcomes once that transaction has committed. The listener stores a batch's
offsets only when every part of it has been answered. Processes rather than
threads: applying a message is mostly Python, and threads of one process
share one interpreter lock.

The processes are forked before the Kafka stream is opened, with the
database connections closed first, so that each opens its own connection
and none inherits librdkafka's threads. A worker stops when the listener
closes its pipe (or dies: the pipe ends too); it ignores SIGINT and
SIGTERM, which a terminal or a supervisor sends to the whole process group,
so that the part it is applying is answered before the listener stops.
"""
import multiprocessing
import signal
from multiprocessing.connection import wait

from django.db import connections

JOIN_TIMEOUT_S = 30.0


class WorkerFailed(RuntimeError):
    """A worker process died, or could not apply its part (a database
    error); the listener reopens the stream, so the batch is read again."""


def serve(pipe, listener_ends=()):
    """A worker process's loop: apply each part it receives, answer with
    ("done", outcomes) or ("failed", why). ``listener_ends``: the
    listener's ends of the pipes, inherited by the fork and closed here, or
    this worker's pipe would never see the end of the listener."""
    from alerts.listen import apply_part

    for end in listener_ends:
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        while True:
            try:
                part = pipe.recv()
            except (EOFError, OSError):
                return
            try:
                answer = ("done", apply_part(part))
            except Exception as error:  # noqa: BLE001 - told to the listener, which reads the batch again
                answer = ("failed", f"{type(error).__name__}: {error}")
            try:
                pipe.send(answer)
            except (BrokenPipeError, OSError):
                return
    finally:
        connections.close_all()


class WorkerPool:
    """``count`` forked worker processes, each with a pipe."""

    def __init__(self, count):
        connections.close_all()  # a forked child must not share the parent's connection
        context = multiprocessing.get_context("fork")
        self.workers = []
        for index in range(count):
            parent_end, child_end = context.Pipe()
            listener_ends = [pipe for _, pipe in self.workers] + [parent_end]
            process = context.Process(target=serve, args=(child_end, listener_ends),
                                      name=f"igwn-alert-apply-{index}", daemon=True)
            process.start()
            child_end.close()
            self.workers.append((process, parent_end))

    def __len__(self):
        return len(self.workers)

    @property
    def pids(self):
        return [process.pid for process, _ in self.workers]

    def send(self, index, part):
        process, pipe = self.workers[index]
        try:
            pipe.send(part)
        except (BrokenPipeError, OSError) as error:
            raise WorkerFailed(f"worker process {process.pid} is gone ({error})") from None

    def receive(self, index):
        """The outcomes of the oldest part sent to worker ``index``."""
        process, pipe = self.workers[index]
        wait([pipe, process.sentinel])
        try:
            if not pipe.poll():
                raise EOFError
            status, value = pipe.recv()
        except (EOFError, OSError):
            process.join(1.0)
            raise WorkerFailed(f"worker process {process.pid} died (exit code {process.exitcode})") from None
        if status != "done":
            raise WorkerFailed(f"worker process {process.pid} could not apply its part: {value}")
        return value

    def close(self):
        """Close the pipes (the workers finish their part and exit), wait for them."""
        for _, pipe in self.workers:
            pipe.close()
        for process, _ in self.workers:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        self.workers = []
