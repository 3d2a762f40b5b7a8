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
import uuid

from mdl_slt.store import Store
from mdl_slt.store import now as store_now

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


class Claims:
    """This process's claims on the units of one store, renewed while they are held."""

    def __init__(self, store, pending: list, lease_s: float = LEASE_S):
        self.store, self.lease_s = store, lease_s
        self.here = machine()
        self.holder = f"{self.here}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.waiting = list(pending)  # (unit, tasks) not yet handed out
        self.handed: dict[str, int] = {}  # unit → how many tasks it was handed out with
        self.held: set[str] = set()
        self.presence = f"process {self.holder}"
        self.since = store_now()  # a task failed after this, by any process, is not tried again in this run
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._renewer = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self):
        self.store.claim(self.presence, self.holder, self.lease_s)  # says this process is still at work
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
            if not self.store.claim(str(unit), self.holder, self.lease_s):
                continue
            del self.waiting[index]
            done = self.store.settled_since(self.since)  # another process may have finished it just before
            todo = [t for t in todo if t.key not in done]
            if not todo:
                self.store.release(str(unit), self.holder)
                return self.next()
            with self._lock:
                self.held.add(str(unit))
            self.handed[str(unit)] = len(todo)
            return unit, todo
        return WAIT if self.waiting else None

    def release(self, unit: str) -> None:
        with self._lock:
            self.held.discard(unit)
        self.store.release(unit, self.holder)

    def finish(self) -> bool:
        """Release every claim; True when no other process is still at work (this one is last)."""
        with self._lock:
            self.held.clear()
        self._lapse_dead()
        return self.store.finish_claims(self.holder)

    def _lapse_dead(self) -> None:
        """End the leases of holders that died on this machine: their units need not wait out the lease."""
        for holder in self.store.live_holders():
            if gone(holder, self.here):
                self.store.lapse(holder)

    def _renew(self) -> None:
        with Store(self.store.path) as store:  # its own connection: sqlite objects stay in their thread
            while not self._stop.wait(self.lease_s / 3):
                with self._lock:
                    units = list(self.held)
                if units:
                    store.renew(units, self.holder, self.lease_s)
