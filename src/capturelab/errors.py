"""Errors shared by every tier. Each carries the exit status the CLI returns for it."""


class CapturelabError(Exception):
    """A failure the user can act on; the message names the file, field or variable at fault."""

    exit_code = 1


class InputError(CapturelabError):
    """Bad input: a malformed inventory value, file or argument (exit 2: fix the input)."""

    exit_code = 2


class HostEnvironmentError(CapturelabError):
    """The machine lacks something (an engine, a tool, a permission): exit 2, with what to install."""

    exit_code = 2
