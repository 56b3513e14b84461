"""Watch a command for network use: a ``sitecustomize.py`` hook that every Python process it
starts inherits through ``PYTHONPATH`` (recording each ``getaddrinfo``, ``create_connection`` and
non-AF_UNIX ``connect`` into ``$EDGESCALE_NET_LOG``), and, where ``strace`` can trace, the
system calls of every process (native code such as onnxruntime's telemetry client never passes
through Python's ``socket`` module). ``tests/conftest.py::tiny_run`` runs the tiny study under it;
``tests/test_no_network.py`` reads what it saw."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

SITECUSTOMIZE = """
import json, os, socket, sys

_LOG = os.environ.get("EDGESCALE_NET_LOG")


def _record(call, *args):
    with open(_LOG, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[:2], "call": call, "args": repr(args)}) + "\\n")


if _LOG:
    _connect, _connect_ex, _getaddrinfo, _create = (
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection
    )

    def connect(self, address):
        if self.family != socket.AF_UNIX:
            _record("connect", address)
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family != socket.AF_UNIX:
            _record("connect_ex", address)
        return _connect_ex(self, address)

    def getaddrinfo(*args, **kwargs):
        _record("getaddrinfo", *args)
        return _getaddrinfo(*args, **kwargs)

    def create_connection(address, *args, **kwargs):
        _record("create_connection", address)
        return _create(address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
    _record("watching")  # proves the hook loaded in this process
"""

INET_CONNECT = re.compile(r"connect\(\d+, \{sa_family=AF_INET6?,")


def strace() -> list[str] | None:
    """``strace`` prefix that follows children and sees only network calls, if it can trace here."""
    exe = shutil.which("strace")
    if exe is None:
        return None
    probe = subprocess.run([exe, "-f", "-o", os.devnull, "true"], capture_output=True)
    return [exe, "-f", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg"] if probe.returncode == 0 else None


def watched_env(hooks: Path, log: Path, repo: Path) -> dict[str, str]:
    """The environment of a watched command: the hook first on ``PYTHONPATH``, and no
    ``ORT_DISABLE_TELEMETRY`` of the test process's (edgescale must set it itself)."""
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    paths = [str(hooks), str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
    return env | {"PYTHONPATH": os.pathsep.join(paths), "EDGESCALE_NET_LOG": str(log)}


def traced(cmd: list[str], trace: Path) -> list[str]:
    """``cmd`` under strace writing to ``trace``, or ``cmd`` itself where strace cannot trace."""
    tracer = strace()
    return [*tracer, "-o", str(trace), *cmd] if tracer else cmd
