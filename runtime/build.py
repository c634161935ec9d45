"""Build the dataset and the stage named by a resolved config (`_target_` classes in conf/)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate

from shardprep.datasets.base import Dataset
from shardprep.stages.base import Stage


def build_dataset(config: dict[str, Any]) -> Dataset:
    return instantiate(config["dataset"], _convert_="all")


def build_stage(config: dict[str, Any]) -> Stage:
    return instantiate(config["stage"], _convert_="all")
