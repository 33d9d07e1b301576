"""The one exception type for a user's mistake.

A missing file, an image that cannot be decoded, a checkpoint that is not ours, an empty
question: these raise :class:`UserError`. The CLIs turn it into one line on stderr and exit
code 2; anything else that escapes is a bug and keeps its stack trace.
"""


class UserError(Exception):
    """Bad input from the user (file, image, checkpoint, argument). The message is one line."""


def check_int(name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` if it is a whole number in ``low..high`` (no upper bound when None), else a
    one-line UserError naming the argument; ``why`` explains the upper bound. The APIs check
    their arguments with it, so a bad value never reaches a tensor as ``range(0, n, 0)``."""
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise UserError(f"{name} must be {bound}{f' ({why})' if why else ''}, got {value}")
    return value
