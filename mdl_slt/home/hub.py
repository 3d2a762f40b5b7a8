"""Write and read snapshots in the Hugging Face hub-cache layout.

    models--ORG--NAME/
      blobs/<sha256>                 file contents, stored once however many revisions share them
      snapshots/<commit>/<file>      relative symlinks into blobs/
      refs/<revision>                the commit hash of that revision (e.g. refs/step1000)

This is the layout `from_pretrained(model_id, revision=..., cache_dir=..., local_files_only=True)`
reads, so the embedded suite loads through exactly the code path real Pythia uses. Also whether
the hub itself answers (`hub_reachable`), asked before any call to it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from mdl_slt.home.files import replacing, write_text


def repo_folder(cache_dir: Path, model_id: str) -> Path:
    return cache_dir / ("models--" + model_id.replace("/", "--"))


def write_snapshot(cache_dir: Path, model_id: str, revision: str, files_dir: Path) -> str:
    """Store every file of `files_dir` as revision `revision` of `model_id`; return the commit hash.

    The commit hash is derived from the file names and contents, so rebuilding identical
    files yields the identical commit. Every file goes through a temporary file of its own and an
    atomic rename, and the ref is written last: a revision is visible only once its snapshot is
    complete, and processes writing the same snapshot at once never see each other's parts.
    """
    repo = repo_folder(cache_dir, model_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    digests = {}
    for path in sorted(files_dir.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            with replacing(blob) as tmp:
                shutil.copyfile(path, tmp)
        digests[path.name] = digest
    commit = hashlib.sha1("".join(f"{n}:{d}\n" for n, d in digests.items()).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, digest in digests.items():
        link = snapshot / name
        if not link.is_symlink():
            try:
                link.symlink_to(Path("..", "..", "blobs", digest))
            except FileExistsError:  # another process wrote the same snapshot (same names, same blobs)
                pass
    write_text(repo / "refs" / revision, commit)
    return commit


def list_revisions(cache_dir: Path, model_id: str) -> list[str]:
    """Revisions present for `model_id`, with `stepN` revisions in step order."""
    refs = repo_folder(cache_dir, model_id) / "refs"
    if not refs.is_dir():
        return []
    names = [p.name for p in refs.iterdir() if not p.name.startswith(".")]
    return sorted(names, key=lambda n: (0, int(n[4:])) if n.startswith("step") and n[4:].isdigit() else (1, n))


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline (HF_HUB_OFFLINE) or the hub's host does not answer within `timeout` s.

    Checked before any hub call, so an offline machine gets an answer at once instead of the
    hub client's retries (about 25 s).
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
