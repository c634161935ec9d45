"""Hydra's own command-line flags (`--help`, `--cfg job|hydra|all`, `--info`, `--shell-completion`) on every launcher.

The launchers compose their config through the compose API (runtime/config.py) so that a launch never changes the
working directory or writes `outputs/<date>/`. These flags only print, so they are handed to `@hydra.main` itself,
with the same config directory and the launcher's defaults: the listing, the resolved config and the completion
script are Hydra's, not an imitation. Hydra never runs the task function for them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from shardprep.runtime.config import CONF_DIR, refuse_unknown_keys
from shardprep.runtime.errors import ConfigError

# The flags that make Hydra print and exit without running the task, and those that only modify them.
PRINTING_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
MODIFIERS = {"--package", "-p", "--resolve"}
# Flags followed by a value (`--cfg job`, `--package stage`): that value is Hydra's, not a config override.
TAKES_VALUE = {"--cfg", "-c", "--package", "-p"}
# Shell completion takes its orders as overrides (`-sc install=bash`, `-sc query=bash`).
COMPLETION = {"--shell-completion", "-sc"}
# `--info` takes an optional value, one of these.
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def wants_hydra_flags(argv: Sequence[str]) -> bool:
    """Whether the command line asks for one of Hydra's printing flags; any other `-` option is refused."""
    flags = [arg for arg in argv if arg.startswith("-")]
    if any(flag in PRINTING_FLAGS for flag in flags):
        unknown = [flag for flag in flags if flag not in PRINTING_FLAGS | MODIFIERS]
        if unknown:
            raise ConfigError(f"{unknown[0]}: not an option of this command; options: "
                              f"{', '.join(sorted(PRINTING_FLAGS | MODIFIERS))}")
        return True
    if flags:
        raise ConfigError(f"{flags[0]}: not an option of this command; options: {', '.join(sorted(PRINTING_FLAGS))} "
                          "(settings are key=value, e.g. shards=20)")
    return False


def run_hydra_flags(argv: Sequence[str], defaults: Sequence[str] = ()) -> int:
    """Hand `argv` to Hydra's own argument parser and let it print: flags first, then the launcher's defaults and
    the overrides (argparse takes the overrides as one run of positional arguments)."""
    overrides = overrides_among(argv)
    flags = [arg for arg in argv if arg not in overrides]
    if not COMPLETION & set(flags):
        refuse_unknown_keys([*defaults, *overrides])
    saved = sys.argv
    sys.argv = [saved[0], *flags, *defaults, *overrides]
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(never_runs)()
    finally:
        sys.argv = saved
    return 0


def overrides_among(argv: Sequence[str]) -> list[str]:
    """The config overrides of a command line with Hydra flags: not the flags, nor the values they take."""
    overrides, previous = [], ""
    for arg in argv:
        value = previous in TAKES_VALUE or previous in {"--info", "-i"} and arg in INFO_CHOICES
        if not arg.startswith("-") and not value:
            overrides.append(arg)
        previous = arg
    return overrides


def never_runs(_: DictConfig) -> None:
    """Hydra calls the task only when no printing flag was given, which `wants_hydra_flags` rules out."""
    raise ConfigError("a Hydra flag was expected on this command line")
