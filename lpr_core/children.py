"""Child processes that end with the command that started them.

A command that starts a server or a pipeline step (``lpr ui``, the rescoring of ``lpr promote``,
``lpr demo``'s ``dvc repro``) starts it in its own process group with :func:`child_group`. While
the group runs, SIGTERM and SIGINT sent to the command are forwarded to the whole group (a
terminal's Ctrl-C reaches only the foreground group, and a ``kill`` only the command), and then
raised in the command as ``SystemExit(143)`` / ``KeyboardInterrupt``, so its own clean-up runs.
However the command ends, the group is stopped: SIGTERM, a grace period, then SIGKILL, including
descendants that moved to a group of their own.

A signal sent to the command may land on any of its threads (an image server's, a native
library's): Python then only notes it, and the main thread acts on it when it next runs Python
code. A main thread blocked in ``Popen.wait()`` or in a read of the child's output would never get
there while the child runs on, so the command waits through :func:`wait`, :func:`lines` and
:func:`communicate`, which block for at most :data:`POLL_S` at a time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psutil

FORWARDED = (signal.SIGTERM, signal.SIGINT)
#: The longest a wait on a child blocks before the main thread looks for a signal.
POLL_S = 0.2

_active: list[subprocess.Popen] = []
_known: dict[int, list[psutil.Process]] = {}
_previous: dict[int, Any] = {}
_state = {"stopping": False}
_guard = threading.Lock()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _handler(signum: int, frame: Any) -> None:
    for proc in list(_active):
        # remember the family before the signal lands: once the child is gone, descendants that
        # left its group can no longer be found through it
        _known.setdefault(proc.pid, []).extend(_family(proc.pid))
        _signal_group(proc.pid, signum)
    if _state["stopping"]:
        return  # a second signal while cleaning up: forwarded, but the clean-up goes on
    _state["stopping"] = True
    previous = _previous.get(signum)
    if callable(previous) and previous is not signal.default_int_handler:
        previous(signum, frame)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the group is still stopped on exit
    for signum in FORWARDED:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue  # started with the signal ignored (e.g. in the background): keep it so
        if current is not _handler:
            _previous[signum] = signal.getsignal(signum)
            signal.signal(signum, _handler)


def _uninstall() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handler:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]
    _state["stopping"] = False


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``proc``'s process group and every descendant: SIGTERM, ``grace_s``, then SIGKILL."""
    family = list({p.pid: p for p in [*_known.pop(proc.pid, []), *_family(proc.pid)]}.values())
    _signal_group(proc.pid, signal.SIGTERM)
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _, alive = psutil.wait_procs(family, timeout=max(0.5, grace_s / 2))
    _signal_group(proc.pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        proc.kill()
    proc.wait()


@contextlib.contextmanager
def child_group(cmd: Sequence[str], *, grace_s: float = 10.0, **popen: Any) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in a new process group while the block runs, forwarding SIGTERM/SIGINT to it.

    Args:
        cmd: the command line.
        grace_s: how long the group has to exit after SIGTERM before it is killed.
        **popen: further ``subprocess.Popen`` arguments (``cwd``, ``env``, ``stdout``...).

    Yields:
        The started process; when the block ends (normally, by an exception, or by a forwarded
        signal raised as ``SystemExit``/``KeyboardInterrupt``) the group is stopped.
    """
    proc = subprocess.Popen(list(cmd), start_new_session=True, **popen)
    with _guard:
        _active.append(proc)
        _install()
    try:
        yield proc
    finally:
        try:
            stop_group(proc, grace_s)
        finally:
            with _guard:
                _active.remove(proc)
                if not _active:
                    _uninstall()


def run_in_group(cmd: Sequence[str], *, check: bool = False, grace_s: float = 10.0, **popen: Any) -> int:
    """Run ``cmd`` to completion in its own process group (see :func:`child_group`); return its exit code.

    Raises:
        subprocess.CalledProcessError: with ``check`` and a non-zero exit code.
    """
    with child_group(cmd, grace_s=grace_s, **popen) as proc:
        code = wait(proc)
    if check and code:
        raise subprocess.CalledProcessError(code, list(cmd))
    return code


def wait(proc: subprocess.Popen, timeout: float | None = None) -> int:
    """``proc.wait()`` that acts on a signal within :data:`POLL_S`, whichever thread it landed on.

    Raises:
        subprocess.TimeoutExpired: ``proc`` is still running after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def lines(proc: subprocess.Popen) -> Iterator[str]:
    """The lines of ``proc.stdout`` as the child writes them, read by a helper thread while the
    caller waits in slices of :data:`POLL_S` (so a signal is acted on while the child is silent)."""
    if proc.stdout is None:
        raise ValueError("the process was started without stdout=subprocess.PIPE")
    pipe: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        try:
            for line in proc.stdout:
                pipe.put(line)
        finally:
            pipe.put(None)

    threading.Thread(target=pump, name="lpr-child-output", daemon=True).start()
    while True:
        try:
            line = pipe.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def communicate(proc: subprocess.Popen) -> tuple[Any, Any]:
    """``proc.communicate()`` that acts on a signal within :data:`POLL_S`."""
    while True:
        try:
            return proc.communicate(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` (so ``finally`` blocks and context
    managers run, e.g. a lock is released) instead of ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
