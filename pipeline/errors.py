"""Errors whose message tells the user everything: the CLI prints them (exit 1) without a traceback."""


class UserFacingError(Exception):
    """Bad input or state the user can fix; the message names the file, field or item."""
