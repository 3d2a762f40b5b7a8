#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch and mdl-slt.
# `bash setup.sh test` adds the test extras (pytest, Ray, datasets) and Debian's poppler-utils,
# which the report test uses to render the PDF.
# torch comes first through pip, pinned, so that the CPU wheel is kept and no CUDA build is pulled;
# everything else through uv (from PyPI), which resolves and installs in seconds where pip takes minutes,
# compiled to bytecode at install: uv writes no .pyc files by default, and where PYTHONDONTWRITEBYTECODE
# is set (many containers) Python never writes them, so every process would compile transformers anew.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0 uv
install() { .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python "$@"; }
if [ "${1:-}" = "test" ]; then
  install -e '.[test]'
  if ! command -v pdftoppm >/dev/null; then
    as_root=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
    $as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq poppler-utils >/dev/null \
      || { echo "setup: could not install poppler-utils (apt-get install poppler-utils)" >&2; exit 1; }
  fi
else
  install -e .
fi
