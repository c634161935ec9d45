"""Compose the Hydra config from `conf/` and the command line, turning every config problem into a `ConfigError`.

The Hydra compose API is used rather than `@hydra.main`: launchers must not change the working directory or create
`outputs/<date>` folders, and a wrong override must end in one line that says what to fix, not a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shardprep.runtime.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_config(overrides: Sequence[str], defaults: Sequence[str] = (), strict: bool = True) -> dict[str, Any]:
    """The resolved config for `defaults` (e.g. `stage=depth` from the launcher) followed by the user's overrides.

    `strict=False` leaves mandatory values (`???`) unset instead of refusing: commands that only read a finished run
    (merge) must not ask for the model paths its launch needed.
    """
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            config = compose("config", overrides=[*defaults, *overrides])
        resolved = OmegaConf.to_container(config, resolve=True, throw_on_missing=strict)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(one_line(error)) from None
    assert isinstance(resolved, dict)
    return resolved


def one_line(error: BaseException) -> str:
    if isinstance(error, MissingConfigException) and error.options:
        first = str(error).splitlines()[0]
        return f"{first}; available: {', '.join(sorted(error.options))}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def positive_int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r}: must be a whole number >= 1")
    return value
