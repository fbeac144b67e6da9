"""The promotion lock: one promotion (or rollback) at a time per registered model, across machines.

Pods reach MLflow only over its REST API, so the lock lives in the model registry itself, where
every client of the tracking server sees it, whatever the backend store:

- **Tickets in the registry.** The lock of ``lpr-encoder`` is the registered model
  ``lpr-encoder.promotion-lock``; each promoter creates a *version* of it, its ticket. The store
  numbers versions atomically (``max + 1`` under the primary key ``(name, version)``: a
  concurrent creator of the same number fails on the key and retries, on sqlite and PostgreSQL
  alike), so tickets are totally ordered, and the holder is the promoter with the lowest live
  ticket. Deleted versions are kept by the store (soft delete), so a number is never handed out
  twice.
- **Holder, expiry, safe breaking.** A ticket names its holder (a random token, host, pid, what
  it is doing) and its time to live; its holder renews it every quarter of that time (the
  ``lpr.lock.beat`` tag) from a background thread, while waiting and while holding. A waiter
  that sees a lower ticket's beat unchanged for longer than its time to live (measured on the
  waiter's own monotonic clock: no clock agreement between machines is needed) breaks it by
  deleting that version. Deleting a version by number cannot remove a newer holder's ticket
  (numbers are never reused), so breaking is safe against the race where a stale holder is
  replaced between the read and the delete. A holder whose ticket was broken notices: its beat
  fails, and :meth:`RegistryLock.ensure_held` raises before any write of the gate.
- **The database, when the tracking URI is one.** A client that talks to the backend store
  directly also takes the lock the database offers: a PostgreSQL session-level advisory lock
  (released by the server when the client dies) or, for sqlite (a single machine by nature), a
  file lock named after the database file. It is taken before the registry ticket, in the same
  order by every client, so the two never deadlock.

The lock's model shows in the registry UI; its live versions are the current holder and queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
TAG_HOLDER = "lpr.lock.holder"
TAG_HOST = "lpr.lock.host"
TAG_PID = "lpr.lock.pid"
TAG_PURPOSE = "lpr.lock.purpose"
TAG_TTL = "lpr.lock.ttl_s"
TAG_BEAT = "lpr.lock.beat"
TAG_BEAT_TIME = "lpr.lock.beat_time"


class LockError(RuntimeError):
    """The promotion lock could not be taken or was lost."""


class LockTimeout(LockError):
    """Waited longer than allowed for the promotion lock."""


class LockLost(LockError):
    """The lock was broken as stale while its holder still ran (it stopped renewing it)."""


def lock_model_name(model_name: str) -> str:
    """The registered model that holds the tickets of ``model_name``'s promotion lock."""
    return f"{model_name}{LOCK_SUFFIX}"


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


@dataclass
class _Seen:
    beat: str | None
    since: float


@dataclass
class RegistryLock:
    """A lock held as the lowest live version ("ticket") of a registered model.

    Use as a context manager. ``client`` is an ``MlflowClient`` (REST or a database store).

    Attributes:
        ticket: this holder's version number once acquired.
        waited_s: how long :meth:`acquire` waited.
        broken: the stale tickets this holder broke while waiting, described.
    """

    client: object
    model_name: str
    purpose: str = "promotion"
    ttl_s: float = 120.0
    wait_s: float = 3600.0
    poll_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    ticket: int | None = None
    waited_s: float = 0.0
    broken: list[str] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.name = lock_model_name(self.model_name)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._beat = 0
        self._thread: threading.Thread | None = None
        self.poll_s = max(0.05, min(self.poll_s, self.ttl_s / 4))

    # -- registry access
    def _ensure_lock_model(self) -> None:
        try:
            self.client.create_registered_model(
                self.name, tags={"lpr.kind": "promotion-lock", "lpr.lock.of": self.model_name},
                description=f"Promotion lock of {self.model_name}: each live version is a promoter's ticket, "
                            "the lowest holds the lock (lpr_core.tracking.lock).")
        except Exception as exc:  # noqa: BLE001 - MlflowException; created by another promoter
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise

    def _take_ticket(self) -> int:
        tags = {TAG_HOLDER: self.token, TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
                TAG_PURPOSE: self.purpose, TAG_TTL: f"{self.ttl_s:g}", TAG_BEAT: "0", TAG_BEAT_TIME: _now_iso()}
        for attempt in range(8):
            try:
                mv = self.client.create_model_version(self.name, f"lpr-lock:/{self.model_name}/{self.token}",
                                                      tags=tags, await_creation_for=0)
                return int(mv.version)
            except MlflowException as exc:
                if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                    self._ensure_lock_model()
                elif "Giving up after" not in str(exc) and "locked" not in str(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))  # many promoters numbering at once: try again
        raise LockError(f"{self.name}: could not take a ticket (the store kept refusing version numbers)")

    def _tickets(self) -> dict[int, dict[str, str]]:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return {int(v.version): dict(v.tags or {}) for v in found}

    def _delete(self, version: int) -> bool:
        try:
            self.client.delete_model_version(self.name, str(version))
            return True
        except Exception as exc:  # noqa: BLE001 - already deleted by another waiter
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise

    # -- heartbeat
    def _heartbeat(self) -> None:
        interval = self.ttl_s / 4
        while not self._stop.wait(interval):
            ticket = self.ticket
            if ticket is None:
                continue
            self._beat += 1
            try:
                self.client.set_model_version_tag(self.name, str(ticket), TAG_BEAT, str(self._beat))
            except Exception as exc:  # noqa: BLE001
                if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                    if ticket == self.ticket:
                        log.warning("%s: ticket %s was broken as stale by another promoter", self.name, ticket)
                        self._lost.set()
                    continue
                log.warning("%s: could not renew ticket %s (%s); retrying", self.name, ticket, exc)

    # -- the lock
    def acquire(self) -> RegistryLock:
        """Take a ticket and wait until it is the lowest live one, breaking stale tickets below it.

        Raises:
            LockTimeout: after ``wait_s`` seconds (the ticket is withdrawn; the holder is named).
        """
        start = self.clock()
        self._ensure_lock_model()
        self.ticket = self._take_ticket()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lock-beat-{self.name}", daemon=True)
        self._thread.start()
        seen: dict[int, _Seen] = {}
        try:
            while True:
                tickets = self._tickets()
                if self.ticket not in tickets or self._lost.is_set():
                    # our own ticket was broken while we waited (this process stalled): queue again
                    log.warning("%s: ticket %s was broken while waiting; taking a new one", self.name, self.ticket)
                    self._delete(self.ticket)
                    self._lost.clear()
                    self.ticket = self._take_ticket()
                    continue
                lower = {v: t for v, t in tickets.items() if v < self.ticket}
                now = self.clock()
                if not lower:
                    self.waited_s = now - start
                    return self
                for version, tags in sorted(lower.items()):
                    beat = tags.get(TAG_BEAT)
                    prev = seen.get(version)
                    if prev is None or prev.beat != beat:
                        seen[version] = _Seen(beat, now)
                        continue
                    ttl = _float(tags.get(TAG_TTL), self.ttl_s)
                    if now - prev.since > ttl and self._delete(version):
                        what = f"ticket {version} of {_describe(tags)}, silent for {now - prev.since:.0f} s"
                        self.broken.append(what)
                        log.warning("%s: broke the stale %s", self.name, what)
                if now - start > self.wait_s:
                    holder_v = min(lower)
                    raise LockTimeout(
                        f"{self.name}: waited {self.wait_s:.0f} s for the promotion lock, held by "
                        f"{_describe(lower[holder_v])} (ticket {holder_v}); try again later or raise "
                        f"promote.lock_wait_s")
                time.sleep(self.poll_s)
        except BaseException:
            self.release()
            raise

    def ensure_held(self) -> None:
        """Raise :class:`LockLost` unless this holder's ticket is still live (call before each write)."""
        if self.ticket is None:
            raise LockLost(f"{self.name}: the lock is not held")
        if self._lost.is_set():
            raise LockLost(f"{self.name}: ticket {self.ticket} was broken as stale: this promotion stalled for "
                           f"longer than lock_ttl_s ({self.ttl_s:g} s); nothing was changed by it after that")
        try:
            self.client.get_model_version(self.name, str(self.ticket))
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                self._lost.set()
                raise LockLost(f"{self.name}: ticket {self.ticket} was broken as stale by another promoter") from None
            raise

    def release(self) -> None:
        """Withdraw the ticket (idempotent); stops the heartbeat."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.ticket is not None:
            with contextlib.suppress(Exception):
                self._delete(self.ticket)
            self.ticket = None

    def __enter__(self) -> RegistryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _describe(tags: dict[str, str]) -> str:
    return (f"'{tags.get(TAG_PURPOSE, '?')}' on {tags.get(TAG_HOST, '?')} pid {tags.get(TAG_PID, '?')} "
            f"(last renewed {tags.get(TAG_BEAT_TIME, '?')})")


# ------------------------------------------------------------------------------ database-level locks


def _advisory_key(model_name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` derived from the model name."""
    digest = hashlib.sha256(f"lpr-promotion:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def database_kind(tracking_uri: str) -> str | None:
    """``"sqlite"`` or ``"postgresql"`` when ``tracking_uri`` is that database, else None."""
    scheme = tracking_uri.split(":", 1)[0].lower()
    base = scheme.split("+", 1)[0]
    return base if base in ("sqlite", "postgresql", "postgres") and "://" in tracking_uri else None


@contextlib.contextmanager
def database_lock(tracking_uri: str, model_name: str, wait_s: float) -> Iterator[str | None]:
    """The lock the backend database offers when the tracking URI is one; yields what was taken.

    PostgreSQL: a session-level advisory lock on a connection held for the duration (the server
    releases it if this process dies). sqlite: a file lock in the temporary directory, named after
    the database file (sqlite is on one machine). Any other URI (an ``http://`` tracking server): nothing.
    """
    kind = database_kind(tracking_uri)
    if kind == "sqlite":
        # keyed by the database file, in the temporary directory: sqlite lives on one machine, and
        # the project's checkout stays clean
        path = os.path.realpath(tracking_uri.split(":///", 1)[1]) if ":///" in tracking_uri else tracking_uri
        digest = hashlib.sha256(f"{path}\0{model_name}".encode()).hexdigest()[:16]
        lock_file = os.path.join(tempfile.gettempdir(), f"lpr-promote-{digest}.lock")
        try:
            with FileLock(lock_file, timeout=wait_s):
                yield f"file lock {lock_file}"
        except Timeout:
            raise LockTimeout(f"{lock_file}: waited {wait_s:.0f} s for the promotion file lock") from None
        return
    if kind in ("postgresql", "postgres"):
        import psycopg2
        url = make_url(tracking_uri)
        conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                dbname=url.database, **{k: v for k, v in url.query.items() if isinstance(v, str)})
        conn.autocommit = True
        key = _advisory_key(model_name)
        try:
            deadline = time.monotonic() + wait_s
            with conn.cursor() as cur:
                while True:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    if cur.fetchone()[0]:
                        break
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"{url.render_as_string(hide_password=True)}: waited {wait_s:.0f} s for "
                                          f"the promotion advisory lock {key}")
                    time.sleep(0.2)
            try:
                yield f"pg_advisory_lock({key})"
            finally:
                with contextlib.suppress(Exception), conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()
        return
    yield None


@contextlib.contextmanager
def promotion_lock(client: object, tracking_uri: str, model_name: str, *, purpose: str, ttl_s: float,
                   wait_s: float) -> Iterator[RegistryLock]:
    """The database lock (when the tracking URI is a database) and then the registry lock."""
    with database_lock(tracking_uri, model_name, wait_s), \
            RegistryLock(client, model_name, purpose=purpose, ttl_s=ttl_s, wait_s=wait_s) as lock:
        yield lock
