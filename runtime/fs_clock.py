"""Time as the run folder's filesystem keeps it, for freshness checks that must not depend on any node's clock.

A file output (PNG, MP4, a folder) cannot carry the run's fingerprint, so on resume it is trusted only if its mtime is
newer than the moment the fingerprint took effect. That mtime is stamped by the filesystem (on a network filesystem,
by the server's clock, whichever node wrote the file); the moment must be stamped by the same clock, not read from
`time.time()` of the node that launched the run, whose clock may be minutes off: ahead, every valid file would look
stale and be redone on every resume; behind, files of the old settings would be taken as new.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROBE_PREFIX = ".tmp-clock-"  # a temporary name (runtime/atomic.py), so a killed probe's leftover is recognised


def filesystem_now(folder: Path) -> float:
    """The current time of the filesystem holding `folder` (or the nearest folder above it that exists), in seconds
    since the epoch: the mtime that a file written there now gets."""
    existing = Path(folder)
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    descriptor, name = tempfile.mkstemp(dir=existing, prefix=PROBE_PREFIX)
    try:
        try:
            os.write(descriptor, b"t")  # a write makes the filesystem (the server) stamp the mtime
        finally:
            os.close(descriptor)
        return os.stat(name).st_mtime_ns / 1e9  # after close: the server's attributes, not a client's cache
    finally:
        os.unlink(name)
