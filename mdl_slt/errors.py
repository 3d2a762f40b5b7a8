"""The one exception type a user sees, a mistake they can fix told in one line, and the helpers
that make any error one line."""

LIMIT = 300  # characters of a foreign error's message quoted in one of ours


class UserError(Exception):
    """A problem with the user's input or environment: what is wrong and how to fix it.

    The CLI prints the message alone, on one line, and exits non-zero; no traceback.
    """


def one_line(error: BaseException | str, limit: int | None = LIMIT) -> str:
    """A message on one line, whitespace collapsed, cut to `limit` characters (marked by …; None:
    whole, for our own messages)."""
    text = " ".join(str(error).split())
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def first_problem(error) -> tuple[str, dict]:
    """A pydantic ValidationError's most telling problem, as (dotted location, its error dict):
    an unknown key first, since a misspelt key is usually what makes another one missing."""
    first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    return ".".join(str(p) for p in first["loc"]), first
