"""Checkpoint files: reproducible bytes, atomic writes, and validation that catches every kind of bad file."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shardprep.runtime.npz import StreamedArray, npz_bytes, read_npz, write_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.stages.base import ArrayOutput, FileOutput

OUTPUT = ArrayOutput("stats", {"mean": (3,), "histogram": (3, None)})


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"mean": rng.random(3), "histogram": rng.integers(0, 9, (3, 4))}


def test_npz_bytes_do_not_depend_on_time_or_key_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    write_npz(first, arrays())
    write_npz(second, dict(reversed(list(arrays().items()))))
    assert first.read_bytes() == second.read_bytes()
    assert set(read_npz(first)) == {"mean", "histogram"}


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_npz(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(TypeError):
        npz_bytes({"bad": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_archives_built_in_memory_read_back_in_numpy_and_zipfile() -> None:
    """`npz_bytes` assembles the zip itself: Python's zipfile checks every member's CRC, numpy loads every dtype and
    shape back exactly (0-d, empty, Fortran order, big-endian, unicode, bool, complex), and the bytes are the same
    whatever the key order."""
    values = {"scalar": np.array(3), "text": np.array("abc" * 20), "empty": np.zeros((0, 5)),
              "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "big": np.arange(6, dtype=">i8"),
              "unicode": np.array(["é", "ab"]), "flags": np.array([True, False]), "complex": np.array([1 + 2j]),
              "floats": np.random.default_rng(0).random((17, 2)).astype(np.float32)}
    data = npz_bytes(values)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(f"{key}.npy" for key in values)
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        for key, value in values.items():
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
            assert np.array_equal(loaded[key], value), key
    assert npz_bytes(dict(reversed(list(values.items())))) == data


def test_store_validates_and_lists_missing(tmp_path: Path) -> None:
    store = RunFolder(tmp_path).shard_store(0, [OUTPUT], "abc")
    for item in ("a", "b", "c"):
        store.write(item, {"stats": arrays()})
    # Truncated file, wrong shape, other fingerprint, temp leftover: all redone or cleaned.
    path_b = store.path("b", OUTPUT)
    path_b.write_bytes(path_b.read_bytes()[:100])
    RunFolder(tmp_path).shard_store(0, [OUTPUT], "old").write("c", {"stats": arrays()})
    (store.folder / ".tmp-123-d.npz").write_bytes(b"partial")
    missing, invalid = store.scan(["a", "b", "c", "d"])
    assert missing == {"b": {"stats"}, "c": {"stats"}, "d": {"stats"}}
    assert invalid == 2
    assert not (store.folder / ".tmp-123-d.npz").exists()


def test_wrong_shape_is_refused_at_write_and_invalid_on_disk(tmp_path: Path) -> None:
    store = RunFolder(tmp_path).shard_store(0, [OUTPUT], "abc")
    with pytest.raises(ValueError, match="shape"):
        store.write("a", {"stats": {"mean": np.zeros(4), "histogram": np.zeros((3, 2))}})
    assert not store.folder.exists() or list(store.folder.iterdir()) == []  # nothing written, not even a temp file
    write_npz(store.path("a", OUTPUT), {"mean": np.zeros(4), "histogram": np.zeros((3, 2)), "fingerprint": np.array("abc")})
    assert store.scan(["a"]) == ({"a": frozenset({"stats"})}, 1)


def test_failed_file_writer_leaves_nothing(tmp_path: Path) -> None:
    def must_not_be_empty(path: Path) -> None:
        if path.stat().st_size == 0:
            raise ValueError("empty")

    output = FileOutput("image", "png", must_not_be_empty)
    store = RunFolder(tmp_path).shard_store(0, [output], "abc")
    with pytest.raises(ValueError):
        store.write("a", {"image": lambda path: path.write_bytes(b"")})
    assert list(store.folder.iterdir()) == []
    store.write("a", {"image": lambda path: path.write_bytes(b"png")})
    assert store.path("a", output).read_bytes() == b"png"


def test_error_log_counts_attempts_and_ignores_a_torn_line(tmp_path: Path) -> None:
    store = RunFolder(tmp_path).shard_store(0, [OUTPUT], "abc")
    store.record_error("a", ValueError("bad frame"), attempt=1, job="local")
    store.record_error("a", ValueError("bad frame"), attempt=2, job="local")
    with open(store.error_log, "a") as log:
        log.write('{"item": "b", "err')  # a task killed mid-append
    assert store.attempts() == {"a": 2}
    assert store.errors()[-1].error == "ValueError: bad frame"


def test_file_outputs_older_than_the_current_settings_are_redone(tmp_path: Path) -> None:
    output = FileOutput("image", "png", lambda path: None)
    RunFolder(tmp_path).shard_store(0, [output], "old").write("a", {"image": lambda path: path.write_bytes(b"png")})
    made = RunFolder(tmp_path).shard_store(0, [output], "old").path("a", output).stat().st_mtime
    assert RunFolder(tmp_path).shard_store(0, [output], "new", valid_since=made - 1).scan(["a"]) == ({}, 0)
    assert RunFolder(tmp_path).shard_store(0, [output], "new", valid_since=made + 1).scan(["a"]) == ({"a": {"image"}}, 1)


def test_one_failing_output_does_not_stop_the_others(tmp_path: Path) -> None:
    outputs = [FileOutput("image", "png", lambda path: None), FileOutput("video", "mp4", lambda path: None)]
    store = RunFolder(tmp_path).shard_store(0, outputs, "abc")

    def broken(path: Path) -> None:
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        store.write("a", {"image": broken, "video": lambda path: path.write_bytes(b"mp4")})
    assert store.scan(["a"]) == ({"a": {"image"}}, 0)


def test_listing_for_status_never_removes_a_file_being_written(tmp_path: Path) -> None:
    store = RunFolder(tmp_path).shard_store(0, [OUTPUT], "abc")
    store.write("a", {"stats": arrays()})
    in_flight = store.folder / ".tmp-99-b.npz"
    in_flight.write_bytes(b"half")
    assert set(store.list_files()) == {"a.npz"} and in_flight.exists()


def test_streamed_arrays_are_written_in_chunks_and_checked_like_the_others(tmp_path: Path) -> None:
    """An output whose array comes in chunks (a clip's events) goes through the same schema check and comes back
    whole; a streamed array of the wrong shape is refused before anything is written."""
    output = ArrayOutput("events", {"t": (None,), "p": (None,)})
    store = RunFolder(tmp_path).shard_store(0, [output], "abc")

    def chunks():
        return (np.arange(start, start + 4, dtype=np.int64) for start in range(0, 12, 4))

    store.write("clip", {"events": {"t": StreamedArray((12,), np.dtype(np.int64), chunks),
                                    "p": np.ones(12, np.int8)}})
    assert store.scan(["clip"]) == ({}, 0)
    assert np.array_equal(read_npz(store.path("clip", output))["t"], np.arange(12))
    with pytest.raises(ValueError, match="shape"):
        store.write("bad", {"events": {"t": StreamedArray((3, 4), np.dtype(np.int64), chunks), "p": np.ones(12)}})
    assert not store.path("bad", output).exists()
