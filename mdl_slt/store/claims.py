"""Several processes on one store share the work: each checkpoint is claimed before it is measured.

A claim is a row of the store's `claims` table: the unit, its holder (host, process, a random
tag) and when its lease ends. A process claims a unit only when no other holder's lease on it is
live (one SQL statement, so two processes never both win), renews the leases of every unit it
holds from a background thread every `LEASE_S / 3` seconds, and releases each when the unit's
last outcome is stored. A process that dies stops renewing: after its lease lapses, another takes
its units over; at once when the dead holder ran on the same machine (the same host name and
process namespace), whose process id is then gone. Each process also holds a claim on itself
while it runs, so N `mdl-slt run` of
one experiment (a Slurm job array, say) measure every task once, and the one that finishes while
no other is still at work writes the report.

`Claims.next()` never waits: it hands out a claimable unit, says `WAIT` when the remaining units
are held by others (the executor keeps collecting what it runs and asks again), or None when
nothing is left to measure.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from mdl_slt.store.database import Store
from mdl_slt.store.records import now

LEASE_S = 60.0  # a claim lapses this long after its holder's last renewal
WAIT = "wait"


def machine() -> str:
    """This host's name and, where Linux shows it, the process namespace: where a process id means one process."""
    try:
        return f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def gone(holder: str, here: str) -> bool:
    """Whether `holder` (machine:pid:tag) ran on this machine and its process no longer exists."""
    where, pid, _ = holder.rsplit(":", 2)
    if where != here or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        pass
    return False


class Leases:
    """The `claims` table of one store: every statement that takes, renews or ends a lease."""

    def __init__(self, store: Store):
        self.db = store.db

    def claim(self, unit: str, holder: str, lease_s: float) -> bool:
        """Take `unit` for `holder` (or extend its own claim) unless another holder's lease is live;
        one statement, so of two processes claiming at once exactly one wins."""
        clock = time.time()
        with self.db:
            taken = self.db.execute("INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(unit) DO UPDATE SET "
                                    "holder = excluded.holder, expires = excluded.expires "
                                    "WHERE claims.expires < ? OR claims.holder = excluded.holder",
                                    (unit, holder, clock + lease_s, clock))
        return taken.rowcount == 1

    def renew(self, units: list[str], holder: str, lease_s: float) -> None:
        """Extend `holder`'s leases on `units` by `lease_s` from now."""
        with self.db:
            self.db.executemany("UPDATE claims SET expires = ? WHERE unit = ? AND holder = ?",
                                [(time.time() + lease_s, u, holder) for u in units])

    def live_holders(self) -> list[str]:
        """Holders with a live lease on some unit."""
        return [h for (h,) in self.db.execute("SELECT DISTINCT holder FROM claims WHERE expires >= ?", (time.time(),))]

    def lapse(self, holder: str) -> None:
        """End every lease of `holder` now (it is known to be dead)."""
        with self.db:
            self.db.execute("UPDATE claims SET expires = 0 WHERE holder = ?", (holder,))

    def release(self, unit: str, holder: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM claims WHERE unit = ? AND holder = ?", (unit, holder))

    def finish(self, holder: str) -> bool:
        """Release all of `holder`'s claims; True when no other holder's lease is live, decided in
        one exclusive transaction, so of processes finishing together exactly one is last."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM claims WHERE holder = ?", (holder,))
            others = self.db.execute("SELECT COUNT(*) FROM claims WHERE expires >= ?", (time.time(),)).fetchone()[0]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return others == 0


class Claims:
    """This process's claims on the units of one store, renewed while they are held."""

    def __init__(self, store, pending: list, lease_s: float = LEASE_S):
        self.store, self.leases, self.lease_s = store, Leases(store), lease_s
        self.here = machine()
        self.holder = f"{self.here}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.waiting = list(pending)  # (unit, tasks) not yet handed out
        self.handed: dict[str, int] = {}  # unit → how many tasks it was handed out with
        self.held: set[str] = set()
        self.presence = f"process {self.holder}"
        self.since = now()  # a task failed after this, by any process, is not tried again in this run
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._renewer = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self):
        self.leases.claim(self.presence, self.holder, self.lease_s)  # says this process is still at work
        self.held.add(self.presence)
        self._renewer.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._renewer.join()

    def __len__(self) -> int:
        return len(self.waiting)

    def next(self):
        """A unit to measure now with its tasks not yet done, claimed; WAIT; or None when done."""
        self._lapse_dead()
        done = self.store.settled_since(self.since)
        still = []
        for unit, tasks in self.waiting:
            todo = [t for t in tasks if t.key not in done]
            if todo:
                still.append((unit, todo))
        self.waiting = still
        for index, (unit, todo) in enumerate(self.waiting):
            if not self.leases.claim(str(unit), self.holder, self.lease_s):
                continue
            del self.waiting[index]
            done = self.store.settled_since(self.since)  # another process may have finished it just before
            todo = [t for t in todo if t.key not in done]
            if not todo:
                self.leases.release(str(unit), self.holder)
                return self.next()
            with self._lock:
                self.held.add(str(unit))
            self.handed[str(unit)] = len(todo)
            return unit, todo
        return WAIT if self.waiting else None

    def release(self, unit: str) -> None:
        with self._lock:
            self.held.discard(unit)
        self.leases.release(unit, self.holder)

    def finish(self) -> bool:
        """Release every claim; True when no other process is still at work (this one is last)."""
        with self._lock:
            self.held.clear()
        self._lapse_dead()
        return self.leases.finish(self.holder)

    def _lapse_dead(self) -> None:
        """End the leases of holders that died on this machine: their units need not wait out the lease."""
        for holder in self.leases.live_holders():
            if gone(holder, self.here):
                self.leases.lapse(holder)

    def _renew(self) -> None:
        with Store(self.store.path) as store:  # its own connection: sqlite objects stay in their thread
            while not self._stop.wait(self.lease_s / 3):
                with self._lock:
                    units = list(self.held)
                if units:
                    Leases(store).renew(units, self.holder, self.lease_s)
