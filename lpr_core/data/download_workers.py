"""img2dataset's worker processes forked from a forkserver that imports img2dataset once per run.

img2dataset starts its worker pool and its logger process with the ``spawn`` start method: each
is a fresh interpreter that imports img2dataset again (webdataset pulls in torch, plus
albumentations, wandb...), 4-5 CPU seconds per process and three processes per URL list. On a
small list that start-up is nearly all of img2dataset's time.

:class:`WorkerServer` is a private ``forkserver`` (the standard library's) that imports
img2dataset once; :func:`forked_workers` makes one ``img2dataset.download`` call start its pool
workers and its logger from it. The workers run the same img2dataset code on the same pickled
downloader, so the shards are the same; only the start method differs. The server is private to
one download run, started with that run's environment (the orphan guard's token: the server and
every process forked from it carry it) and stopped at the end of the run.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing import forkserver, popen_forkserver, process, spawn, util
from multiprocessing.context import BaseContext, reduction, set_spawning_popen

__all__ = ["WorkerServer", "forked_workers", "PRELOAD"]

#: Modules the server imports once, before it forks any process (the workers unpickle classes of each).
PRELOAD = ("img2dataset", "lpr_core.data.fetch_guard", __name__)

# the server of the img2dataset call in progress (set by forked_workers, main thread only)
_active: WorkerServer | None = None


class WorkerServer:
    """A private forkserver for img2dataset's processes; start it lazily, stop it at the end.

    Attributes:
        launched: processes started from it so far.
    """

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self._server = forkserver.ForkServer()
        self._server.set_forkserver_preload(list(preload))
        self.launched = 0

    @property
    def pid(self) -> int | None:
        """The server's process id (None before :meth:`start` and after :meth:`stop`)."""
        return getattr(self._server, "_forkserver_pid", None)

    def start(self) -> None:
        """Start the server; it imports the preload modules in the background."""
        self._server.ensure_running()

    def connect(self, fds: list[int]) -> tuple[int, int]:
        """Ask the server for a new process (see ``multiprocessing.forkserver``)."""
        self.launched += 1
        return self._server.connect_to_new_process(fds)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server; after ``timeout`` seconds it and the processes it forked are killed."""
        pid = self.pid
        if pid is None:
            return
        alive_fd = self._server._forkserver_alive_fd
        address = self._server._forkserver_address
        self._server._forkserver_pid = self._server._forkserver_alive_fd = None
        self._server._forkserver_address = None
        os.close(alive_fd)  # the server exits at EOF, once the processes it forked are gone too
        deadline = time.monotonic() + timeout
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                for child in [*_children_of(pid), pid]:
                    with contextlib.suppress(OSError):
                        os.kill(child, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        if address and not util.is_abstract_socket_namespace(address):
            with contextlib.suppress(OSError):
                os.unlink(address)


def _children_of(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                            found.append(int(entry))
    return found


class _Popen(popen_forkserver.Popen):
    """``popen_forkserver.Popen`` asking the active :class:`WorkerServer` instead of the global one."""

    def _launch(self, process_obj):
        if _active is None:
            raise RuntimeError("an img2dataset process was started outside forked_workers()")
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = _active.connect(self._fds)
        # as the standard library does: a duplicate of the data pipe's write end is the parent's sentinel
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(process.BaseProcess):
    # the start method a started worker reports (and uses by default): img2dataset's own
    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


class _Context(BaseContext):
    """The multiprocessing context img2dataset's distributor gets: pools of forked workers."""

    _name = "forkserver"
    Process = _Process


_CONTEXT = _Context()


def _get_context(method: str | None = None) -> BaseContext:
    # img2dataset's distributor asks for get_context("spawn")
    return _CONTEXT


@contextlib.contextmanager
def forked_workers(server: WorkerServer) -> Iterator[None]:
    """During one ``img2dataset.download`` call (main thread), start its processes from ``server``.

    Replaces, for the call only, the ``get_context`` of img2dataset's distributor and the start
    method of its ``LoggerProcess``; both are restored on exit.
    """
    global _active
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check (no network)
    import img2dataset.distributor as distributor
    from img2dataset.logger import LoggerProcess

    server.start()
    saved = distributor.get_context, LoggerProcess.__dict__.get("_Popen"), _active
    distributor.get_context, LoggerProcess._Popen, _active = _get_context, _Process.__dict__["_Popen"], server
    try:
        yield
    finally:
        distributor.get_context, popen, _active = saved
        if popen is None:
            del LoggerProcess._Popen  # back to SpawnProcess's
        else:
            LoggerProcess._Popen = popen
