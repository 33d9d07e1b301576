"""The one exception type for a user's mistake.

A missing file, an image that cannot be decoded, a checkpoint that is not ours, an empty
question: these raise :class:`UserError`. The CLIs turn it into one line on stderr and exit
code 2; anything else that escapes is a bug and keeps its stack trace.
"""


class UserError(Exception):
    """Bad input from the user (file, image, checkpoint, argument). The message is one line."""
