"""The shard plan: contiguous, balanced by weight, sequence-aware, deterministic, and refusing impossible counts."""

import random

import pytest

from shardprep.datasets.base import Item
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.sharding import plan_shards


def frames(sequence_lengths: list[int]) -> list[Item]:
    return [Item(f"s{s}_f{f}", sequence=f"s{s}") for s, length in enumerate(sequence_lengths) for f in range(length)]


def test_plan_covers_every_item_once_in_order() -> None:
    items = frames([7] * 10)
    plan = plan_shards(items, 4)
    assert plan[0][0] == 0 and plan[-1][1] == len(items)
    assert all(end == next_start for (_, end), (next_start, _) in zip(plan, plan[1:]))
    assert all(end > start for start, end in plan)


def test_cuts_land_on_sequence_boundaries_when_balance_allows() -> None:
    items = frames([10] * 12)  # 120 frames, 4 shards of 30 = 3 sequences each
    plan = plan_shards(items, 4)
    assert plan == [(0, 30), (30, 60), (60, 90), (90, 120)]
    for start, end in plan:
        assert items[start].sequence != items[start - 1].sequence or start == 0


def test_long_sequence_is_split_rather_than_unbalancing() -> None:
    items = frames([100, 5, 5])
    plan = plan_shards(items, 4)
    sizes = [end - start for start, end in plan]
    assert max(sizes) - min(sizes) <= 10


def test_balanced_by_weight() -> None:
    items = [Item(f"clip{i}", sequence=f"s{i}", weight=10 if i < 5 else 1) for i in range(55)]
    plan = plan_shards(items, 2)
    weights = [sum(item.weight for item in items[start:end]) for start, end in plan]
    assert abs(weights[0] - weights[1]) <= 10


def test_plan_is_deterministic() -> None:
    items = frames([3, 9, 4, 11, 2, 8])
    assert plan_shards(items, 5) == plan_shards(list(items), 5)


@pytest.mark.parametrize("shards", [0, -1, 8])
def test_impossible_shard_counts_are_config_errors(shards: int) -> None:
    with pytest.raises(ConfigError):
        plan_shards(frames([7]), shards)


def test_grouped_plan_cuts_only_at_batch_boundaries_and_refuses_more_shards_than_batches() -> None:
    from shardprep.runtime.worker import batch_plan

    items = [Item(f"f{i:03d}", sequence=f"s{i // 7}") for i in range(50)]
    for shards in (1, 2, 3, 5, 13):
        plan = plan_shards(items, shards, group=4)
        assert plan[0][0] == 0 and plan[-1][1] == 50 and len(plan) == shards
        assert all(start % 4 == 0 and start < end for start, end in plan)
        assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    with pytest.raises(ConfigError, match="only 13 batches of 4"):
        plan_shards(items, 14, group=4)
    # A resume redoes every fixed batch that holds a missing item, whole; the batches are those of the item order.
    start, end = plan_shards(items, 3, group=4)[1]
    shard = items[start:end]
    todo = [shard[1], shard[9]]
    assert batch_plan(shard, todo, 4, fixed=True) == [shard[0:4], shard[8:12]]
    assert batch_plan(shard, todo, 4, fixed=False) == [todo]


# MPI-INF-3DHP's frames per sequence as MMPose's preprocess_mpi_inf_3dhp.py lists them (train (subject, sequence),
# each for 8 cameras; test subjects): a real set of very uneven videos.
MPI_3DHP_TRAIN = [6416, 12430, 6502, 6081, 12488, 12283, 6171, 6675, 12820, 12312, 6188, 6145, 6239, 6320, 6468, 6054]
MPI_3DHP_TEST = [6151, 6080, 5838, 6007, 320, 492]


def videos(weights: list[int]) -> list[Item]:
    return [Item(f"v{i:04d}", sequence=f"v{i:04d}", weight=weight) for i, weight in enumerate(weights)]


def spread(items: list[Item], plan: list[tuple[int, int]]) -> int:
    loads = [sum(item.weight for item in items[start:end]) for start, end in plan]
    return max(loads) - min(loads)


@pytest.mark.parametrize("seed", range(40))
def test_very_uneven_videos_give_shards_within_the_heaviest_video(seed: int) -> None:
    rng = random.Random(seed)
    weights = [rng.choice([1, 3, 40, 400, 5000, rng.randint(1, 6000)]) for _ in range(rng.randint(5, 120))]
    items = videos(weights)
    for shards in sorted({2, 3, 7, 20, len(items)} & set(range(1, len(items) + 1))):
        plan = plan_shards(items, shards)
        assert plan[0][0] == 0 and plan[-1][1] == len(items) and all(end > start for start, end in plan)
        assert all(end == next_start for (_, end), (next_start, _) in zip(plan, plan[1:]))
        assert spread(items, plan) <= max(weights), (shards, weights)
        assert plan == plan_shards(list(items), shards)  # deterministic


def test_3dhp_videos_are_balanced_by_frames_not_count() -> None:
    items = videos(MPI_3DHP_TEST + [n for n in MPI_3DHP_TRAIN for _ in range(8)])
    by_frames = plan_shards(items, 20)
    assert spread(items, by_frames) <= max(item.weight for item in items)
    by_count = plan_shards([Item(item.id, sequence=item.sequence) for item in items], 20)
    assert spread(items, by_count) > 2 * spread(items, by_frames)
