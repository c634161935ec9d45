"""Errors the user can act on.

A `ConfigError` is raised for anything wrong with the command line, the config or the input data that is found
before work is submitted. The launchers print its message as one line, without a traceback, and exit non-zero.
"""


class ConfigError(Exception):
    """A problem the user must fix before anything runs; the message says what and how."""
