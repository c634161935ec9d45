"""Refuse unusable model files before submission: missing, empty, or not in the format their name says.

A truncated download or a `touch`ed placeholder would otherwise be found only when every task fails to load it. The
headers are parsed, not the weights loaded: this runs on the login node, for files of gigabytes.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

from shardprep.runtime.errors import ConfigError

PICKLE_PROTOCOL = 0x80  # first byte of a legacy (non-zip) torch.save file: pickle protocol 2+
SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own bound on the JSON header


def check_model_files(files: Sequence[Path]) -> None:
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: not found; the stage needs this file (fix the path in its config)")
        if path.stat().st_size == 0:
            raise ConfigError(f"{path}: the file is empty (0 bytes); download or copy it again")
        problem = header_problem(path)
        if problem:
            raise ConfigError(f"{path}: {problem}; download or copy it again")


def header_problem(path: Path) -> str | None:
    """What is wrong with the file's header for its suffix, or None (also for suffixes not checked here)."""
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt", ".ckpt"):
        if zipfile.is_zipfile(path):
            return None
        with path.open("rb") as file:
            first = file.read(1)
        return None if first and first[0] == PICKLE_PROTOCOL else "not a PyTorch checkpoint (neither zip nor pickle)"
    if suffix == ".safetensors":
        with path.open("rb") as file:
            head = file.read(8)
            if len(head) < 8:
                return "not a safetensors file (shorter than its header length)"
            (length,) = struct.unpack("<Q", head)
            if length > min(SAFETENSORS_MAX_HEADER, path.stat().st_size - 8):
                return "not a safetensors file (header length past the end of the file)"
            try:
                json.loads(file.read(length))
            except ValueError:
                return "not a safetensors file (its header is not JSON)"
        return None
    if suffix == ".json":
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            return f"not valid JSON ({error})"
    return None
