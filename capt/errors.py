"""The one exception type for mistakes a user can fix (bad input, missing files).

Stages print its message as one line and exit non-zero, without a traceback.
"""


class CaptError(Exception):
    """A user-facing error: the message names the file and what is wrong with it."""
