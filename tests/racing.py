"""Racing worker processes for the never-twice tests: several forked
processes start the same step at the same moment, each with its own
database connection, and every send they make is written to one file."""
import multiprocessing
import os

from django.db import connections

RACERS = 3
JOIN_S = 120


def record_send(record, destination, identity, format):
    """One line per send, in a file shared by the racing processes."""
    with open(record, "a") as stream:  # O_APPEND: whole lines from every process
        stream.write(f"{destination['name']} {identity} {format} {os.getpid()}\n")


def race(target, *args, racers=RACERS):
    """Run ``target(*args, barrier, failures)`` in ``racers`` processes that
    wait for each other at the barrier; fail if any of them failed."""
    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(racers), context.Queue()
    connections.close_all()  # never share the parent's connection
    processes = [context.Process(target=target, args=(*args, barrier, failures)) for _ in range(racers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_S)
    assert [process.exitcode for process in processes] == [0] * racers
    assert failures.empty(), failures.get()
