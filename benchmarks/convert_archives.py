"""H36M converted from the release's .tgz archives read in place vs from the extracted tree, same raw set, this run.

    python benchmarks/convert_archives.py [--frames 250] [--subjects S1 S5]

Writes a raw Human3.6M of 4 videos per subject in the release's layout (tests/data/raw_h36m.py), the videos
H36M-sized (1000 x 1002, 50 frames/s, H.264 of moving noise: benchmarks/convert_throughput.py), packs it into the
release's archives (`Videos_S1.tgz`, `Poses_D2_Positions_S1.tgz`, `Poses_D3_Positions_mono_S1.tgz`), then times
what the convert tasks do, one process, one video after another, for each form: list the items (their weights
from the CDFs), read each video's CDFs, extract every 5th frame. The outputs must be equal (checked).
An archive is read forward to the member asked for (gzip cannot seek): per video the archive form adds the
decompression of the archive up to that video, so the overhead grows with the videos per archive (4 here; the
release's `Videos_S*.tgz` hold about 120 [I]).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from convert_throughput import write_video  # noqa: E402
from data.raw_h36m import pack_release_archives, write_raw_h36m  # noqa: E402

from shardprep.datasets.h36m_raw import H36MRawDataset  # noqa: E402
from shardprep.datasets.tgz_members import ArchiveMember  # noqa: E402
from shardprep.stages.frames import extract_archived_frames, extract_frames  # noqa: E402


def convert_all(root: Path, subjects: list[str], out: Path) -> float:
    """Seconds to list, read and extract every video of `root` into `out/<item>`."""
    out.mkdir()
    start = time.perf_counter()
    dataset = H36MRawDataset("h36m", str(root), subjects={"train": subjects})
    dataset.validate()
    for item in dataset.items():
        conversion = dataset.read(item)
        extract = extract_archived_frames if isinstance(conversion.video, ArchiveMember) else extract_frames
        extract(conversion.video, conversion.step, conversion.names, out / item.id, threads=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--subjects", nargs="+", default=["S1", "S5"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_raw_h36m(Path(tmp) / "raw", frames=args.frames, extra_frames=0, subjects=args.subjects)
        videos = sorted(raw.glob("S*/Videos/*.mp4"))
        for video in videos:
            write_video(video, args.frames)
        archives = pack_release_archives(raw, Path(tmp) / "archives", subjects=args.subjects)
        size = sum(path.stat().st_size for path in archives.glob("Videos_*.tgz"))
        extracted = convert_all(raw, args.subjects, Path(tmp) / "from_tree")
        archived = convert_all(archives, args.subjects, Path(tmp) / "from_archives")
        for folder in (Path(tmp) / "from_tree").iterdir():
            for frame in folder.iterdir():
                other = Path(tmp) / "from_archives" / folder.name / frame.name
                assert other.read_bytes() == frame.read_bytes(), other
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(videos)} videos 1000x1002 of "
          f"{args.frames} frames, every 5th extracted; video archives {size / 1e6:.0f} MB for {len(args.subjects)} "
          f"subject(s)")
    print(f"extracted tree: {extracted:.2f} s; archives read in place: {archived:.2f} s ({archived / extracted:.2f}x); "
          f"outputs equal")


if __name__ == "__main__":
    main()
