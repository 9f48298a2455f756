"""Which process holds a claim, and whether that process is certainly gone.

A claim (a notice delivery being sent) names the process that took it:
``<host>:<pid>:<start>:<machine>:<nonce>``, where ``start`` is the
process's start time in clock ticks since boot (``/proc/<pid>/stat``, so a
reused pid is told apart) and ``machine`` a digest of the kernel's boot id
and the pid namespace (so two machines, two boots or two containers that
share a host name are never confused). Only claims of this machine, this
boot and this pid namespace can be judged: there the process is gone when
``/proc/<pid>`` is missing, is a zombie, or started at another time. A dead
process can send nothing more, so its claim may be released at once rather
than after the claim timeout. Claims of other machines are never judged
(Linux's /proc; elsewhere nothing is ever judged dead).
"""
import functools
import hashlib
import os
import socket
import uuid

HOST_CHARS = 60
DEAD_STATES = ("Z", "X", "x")  # zombie, dead: the process runs no more code


def _stat(pid):
    """(state, start time in ticks) of ``pid``, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3, starttime field 22 of proc(5).
    return fields[0], fields[19]


@functools.lru_cache(maxsize=1)
def machine():
    """This boot of this kernel and this pid namespace, as 12 hex digits."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return uuid.uuid4().hex[:12]  # cannot tell: nothing will match it
    return hashlib.sha256(f"{boot_id}/{namespace}".encode()).hexdigest()[:12]


def process_token():
    """A fresh claim token naming this process."""
    stat = _stat(os.getpid())
    start = stat[1] if stat else "0"
    host = socket.gethostname()[:HOST_CHARS].replace(":", "_")
    return f"{host}:{os.getpid()}:{start}:{machine()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(token):
    """True only if ``token`` names a process of this machine, boot and pid
    namespace that has certainly ended; False when alive or unknown."""
    parts = token.rsplit(":", 4)
    if len(parts) != 5:
        return False  # an older or foreign token: cannot tell
    _host, pid, start, token_machine, _nonce = parts
    if token_machine != machine() or not pid.isdigit() or start == "0":
        return False
    stat = _stat(int(pid))
    return stat is None or stat[0] in DEAD_STATES or stat[1] != start
