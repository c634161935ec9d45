"""Build the dataset and the stage named by a resolved config (`_target_` classes in conf/)."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from shardprep.datasets.base import Dataset
from shardprep.runtime.errors import ConfigError
from shardprep.stages.base import Stage


def build_dataset(config: dict[str, Any]) -> Dataset:
    return _build(config, "dataset")


def build_stage(config: dict[str, Any]) -> Stage:
    return _build(config, "stage")


def _build(config: dict[str, Any], group: str) -> Any:
    """instantiate(config[group]); a class's own refusal, or settings its constructor does not take, as the one-line
    ConfigError a user's mistake gets (Hydra wraps both in an InstantiationException with a traceback)."""
    try:
        return instantiate(config[group], _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, TypeError):
            target = config[group].get("_target_")
            raise ConfigError(f"{group}: {target} cannot be built from these settings ({cause}): remove a key it does "
                              f"not take with ~{group}.<key>, or give a missing one with +{group}.<key>=...") from None
        raise
