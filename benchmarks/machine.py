"""A speed reference for the machine a benchmark runs on.

Wall-clock figures from two machines of the same "2-core" kind can differ
by a factor of two or more (CPU model, neighbours on the host). Every
benchmark prints how long a fixed pure-Python loop takes next to its
figures, so numbers measured on different days can be compared fairly.
"""
import os
import time

REFERENCE_STEPS = 10_000_000


def python_loop_seconds(steps=REFERENCE_STEPS):
    """Seconds for ``steps`` additions in a plain Python loop (one core)."""
    started = time.perf_counter()
    total = 0
    for step in range(steps):
        total += step
    return time.perf_counter() - started


def machine_line():
    """One line: CPUs, load, and the reference loop's time."""
    return (f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; a "
            f"{REFERENCE_STEPS / 1e6:.0f}M-step Python loop takes {python_loop_seconds():.2f} s "
            f"(the speed reference for comparing runs on other machines)")
