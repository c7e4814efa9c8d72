"""The one exception type a user is meant to read.

Anything raised as :class:`DressError` is printed by the CLI as ``error: <message>`` with exit
status 2 and no traceback. The message must say what went wrong *and what to do about it*.
"""


class DressError(Exception):
    """A problem with the user's input or environment, explained in words."""
