"""The `mdl-slt` command line: each command parses its arguments, calls one function of the
library and prints. Every user mistake ends in one line on stderr and exit code 2.

    app         the application, global options, what commands share
    runs        run, validate, status, report; suite build / list; compressors
    llc         llc estimate (the default) / reestimate / calibrate
    checkpoint  critical and predict, on one checkpoint
    layers      the layer study on one checkpoint, and its weight groups

May import: every room.
"""

from __future__ import annotations

import os
import sys

from mdl_slt.cli import runs, checkpoint, layers, llc  # noqa: F401,I001  each registers its commands, in this order
from mdl_slt.cli.app import app
from mdl_slt.errors import UserError, one_line


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UserError as error:
        print(f"mdl-slt: error: {one_line(error, None)}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001  click's own, or typer's vendored copy of click (typer ≥ 0.20)
        if type(error).__name__ == "Abort":
            print("mdl-slt: interrupted; results stored so far are kept", file=sys.stderr)
            sys.exit(130)
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()  # a usage error: click's message, exit code 2
            sys.exit(error.exit_code)
        if os.environ.get("MDL_SLT_DEBUG"):
            raise
        print(f"mdl-slt: internal error: {type(error).__name__}: {one_line(error)} "
              "(set MDL_SLT_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
