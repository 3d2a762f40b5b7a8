"""Record keys, built here and nowhere else.

A *task* (one checkpoint's base loss, its LLC, one compressor entry's critical search, a model's
step-size choice) is identified by what it measured, the bytes it measured and the settings it
measured with:

    task key = task | model | revision | checkpoint identity | config hash

where the identity names the checkpoint's bytes (its snapshot's commit hash, or a hash of a local
directory's files: `checkpoints.checkpoint_identity`), so a rebuilt suite or a moved revision is
measured again, never merged with what the old bytes gave; and the config hash covers exactly the
settings that task depends on (see `mdl_slt.plan.tasks`).
Every row a task writes is keyed by its task key plus what tells its rows apart (the knob value
of a loss-curve point, the ε of a critical value), so rerunning a task can never duplicate or
mix rows, and two tasks never share a key.
"""

from __future__ import annotations

import hashlib
import json


def config_hash(payload) -> str:
    """A short, stable hash of a JSON-serialisable payload (keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def task_key(task: str, model: str, revision: str | None, checkpoint: str | None, config: str) -> str:
    return "|".join(str(part) for part in (task, model, revision, checkpoint, config))


def row_key(task: str, *parts) -> str:
    """The key of one row of task `task` (a task key), told apart by `parts`."""
    return "|".join(str(part) for part in (task, *parts))
