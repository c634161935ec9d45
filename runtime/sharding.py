"""Split an ordered item list into contiguous shards of about equal work.

Shards are contiguous runs of the item order, so a shard's items are known from two numbers and a sequence (video,
camera) stays in one shard whenever that does not unbalance the shards by more than half a sequence: cuts snap to
the nearest sequence boundary within tolerance, otherwise they fall inside the sequence. The plan depends only on
the items, never on the machine, so every task computes the same one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

from shardprep.datasets.base import Item
from shardprep.runtime.errors import ConfigError

Plan = list[tuple[int, int]]  # per shard: [start, end) into the item list


def plan_shards(items: Sequence[Item], shards: int, snap_tolerance: float = 0.25, group: int = 1) -> Plan:
    """Cut `items` into `shards` non-empty contiguous ranges balanced by `Item.weight`.

    `snap_tolerance` is how far (as a fraction of one shard's ideal weight) a cut may move to land on a sequence
    boundary. With `group` > 1 every cut falls on a multiple of `group` (the fixed batches of a stage whose results
    depend on what shares a batch: no batch is ever split between shards).
    """
    if shards < 1:
        raise ConfigError(f"shards={shards}: need at least 1 shard")
    if shards > len(items):
        raise ConfigError(f"shards={shards} but the dataset has only {len(items)} items: use shards<={len(items)}")
    if group > 1:
        batches = -(-len(items) // group)
        if shards > batches:
            raise ConfigError(f"shards={shards} but the {len(items)} items make only {batches} batches of {group} "
                              f"(the stage's batch_size), and a batch is never split: use shards<={batches}")
        return _grouped(plan_shards(_group_items(items, group), shards, snap_tolerance), group, len(items))
    cumulative = [0, *accumulate(max(1, item.weight) for item in items)]
    total = cumulative[-1]
    boundaries = [i for i in range(1, len(items)) if items[i].sequence != items[i - 1].sequence]
    cuts = [0]
    for k in range(1, shards):
        target = total * k / shards
        position = _nearest(cumulative, target)
        snapped = _nearest_boundary(boundaries, cumulative, target, total / shards * snap_tolerance)
        if snapped is not None:
            position = snapped
        # Keep every shard non-empty and leave room for the shards still to cut.
        position = min(max(position, cuts[-1] + 1), len(items) - (shards - k))
        cuts.append(position)
    cuts.append(len(items))
    return [(cuts[i], cuts[i + 1]) for i in range(shards)]


def _nearest(cumulative: list[int], target: float) -> int:
    """The item index whose cumulative weight is closest to `target`."""
    i = bisect.bisect_left(cumulative, target)
    if i > 0 and (i >= len(cumulative) or target - cumulative[i - 1] <= cumulative[i] - target):
        i -= 1
    return i


def _nearest_boundary(boundaries: list[int], cumulative: list[int], target: float, tolerance: float) -> int | None:
    if not boundaries:
        return None
    j = bisect.bisect_left(boundaries, _nearest(cumulative, target))
    candidates = [boundaries[i] for i in (j - 1, j) if 0 <= i < len(boundaries)]
    best = min(candidates, key=lambda b: abs(cumulative[b] - target))
    return best if abs(cumulative[best] - target) <= tolerance else None


def _group_items(items: Sequence[Item], group: int) -> list[Item]:
    """One stand-in item per group of `group` consecutive items: their summed weight, the sequence of the first."""
    stand_ins = []
    for start in range(0, len(items), group):
        members = items[start:start + group]
        weight = sum(max(1, item.weight) for item in members)
        stand_ins.append(Item(id=members[0].id, sequence=members[0].sequence, weight=weight))
    return stand_ins


def _grouped(plan: Plan, group: int, count: int) -> Plan:
    return [(start * group, min(end * group, count)) for start, end in plan]
