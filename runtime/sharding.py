"""Split an ordered item list into contiguous shards of about equal work.

Shards are contiguous runs of the item order, so a shard's items are known from two numbers and a sequence (video,
camera) stays in one shard whenever that does not unbalance the shards by more than half a sequence: cuts snap to
the nearest sequence boundary within tolerance, otherwise they fall inside the sequence. The plan depends only on
the items, never on the machine, so every task computes the same one.

Where every item is a sequence of its own and the weights differ (one item per video, weighing its frames), every
cut is a sequence boundary and the cuts are chosen for balance alone: of the nearest cuts and the cuts of a
threshold fill at each level within one item of the ideal, each then balanced pairwise (a cut moves while that
evens its two shards), the plan with the least spread between its heaviest and lightest shard. The spread is then
at most the heaviest item on every set tried in tests/test_sharding.py; the weights mean nothing to the planner.
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
    if _whole_sequences(items) and len({item.weight for item in items}) > 1:
        cuts = _balanced_cuts(cumulative, shards)
        return [(cuts[i], cuts[i + 1]) for i in range(shards)]
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


def _whole_sequences(items: Sequence[Item]) -> bool:
    """No sequence spans two items (so any cut falls between sequences)."""
    return all(items[i].sequence != items[i - 1].sequence for i in range(1, len(items)))


def _balanced_cuts(cumulative: list[int], shards: int) -> list[int]:
    """The cuts (0 .. item count) of the least spread found: see the module's docstring."""
    count, total = len(cumulative) - 1, cumulative[-1]
    heaviest = max(b - a for a, b in zip(cumulative, cumulative[1:]))
    ideal = total / shards
    nearest = [0]
    for k in range(1, shards):
        nearest.append(min(max(_nearest(cumulative, total * k / shards), nearest[-1] + 1), count - (shards - k)))
    candidates = {(*nearest, count)}
    low, high = max(1, int(ideal - heaviest)), int(ideal) + 1
    step = max(1, (high - low) // 4096)  # at most ~4096 levels: the search stays well under a second
    for level in range(low, high + 1, step):
        filled = _threshold_fill(cumulative, shards, level)
        if filled is not None:
            candidates.add(tuple(filled))
    balanced = [_even_pairs(cumulative, list(cuts)) for cuts in sorted(candidates)]

    def spread(cuts: list[int]) -> tuple[int, int, list[int]]:
        weights = [cumulative[b] - cumulative[a] for a, b in zip(cuts, cuts[1:])]
        return max(weights) - min(weights), max(weights), cuts

    return min(balanced, key=spread)


def _threshold_fill(cumulative: list[int], shards: int, level: int) -> list[int] | None:
    """Each shard but the last takes items until it weighs `level` or more; None where that leaves a shard empty."""
    count, cuts = len(cumulative) - 1, [0]
    for k in range(1, shards):
        cut = bisect.bisect_left(cumulative, cumulative[cuts[-1]] + level)
        if cut >= count - (shards - k) + 1:
            return None
        cuts.append(max(cut, cuts[-1] + 1))
    return [*cuts, count]


def _even_pairs(cumulative: list[int], cuts: list[int]) -> list[int]:
    """Move each inner cut by one item while that makes its two shards' weights closer, until none moves (the sum
    of squared shard weights falls with every move, so this ends)."""
    cuts = list(cuts)
    moved = True
    while moved:
        moved = False
        for k in range(1, len(cuts) - 1):
            while True:
                left = cumulative[cuts[k]] - cumulative[cuts[k - 1]]
                right = cumulative[cuts[k + 1]] - cumulative[cuts[k]]
                if left > right and cuts[k] - 1 > cuts[k - 1] and \
                        cumulative[cuts[k]] - cumulative[cuts[k] - 1] < left - right:
                    cuts[k] -= 1
                elif right > left and cuts[k] + 1 < cuts[k + 1] and \
                        cumulative[cuts[k] + 1] - cumulative[cuts[k]] < right - left:
                    cuts[k] += 1
                else:
                    break
                moved = True
    return cuts


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
