"""The one exception type a user sees: a mistake they can fix, told in one line."""


class UserError(Exception):
    """A problem with the user's input or environment: what is wrong and how to fix it.

    The CLI prints the message alone, on one line, and exits non-zero; no traceback.
    """
