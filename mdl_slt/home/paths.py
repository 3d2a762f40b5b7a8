"""Where mdl-slt keeps what it builds once and reuses: the corpus, the suite, tokenized data.

The home is `$MDL_SLT_HOME` when set (read at call time, never at import), else
`~/.cache/mdl-slt`. Every function that touches the home also takes it as an argument.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("MDL_SLT_HOME", Path.home() / ".cache" / "mdl-slt")).expanduser()


def resolve_home(home: str | Path | None) -> Path:
    path = Path(home).expanduser() if home is not None else default_home()
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_cache(home: Path) -> Path:
    """The Hugging Face hub-cache layout holding the embedded suite (`models--ORG--NAME/...`)."""
    return home / "hub"
