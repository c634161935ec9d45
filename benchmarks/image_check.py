"""Launch-time image check: every row's file looked up under each known layout, folder listings vs a stat per row.

    python benchmarks/image_check.py [--rows 100000] [--folders 50]

Writes `rows` empty frame files in `folders` sequence folders (3DPW's AugLift naming) and times, in this run:
  naive     `Path.is_file()` for every row's path under each of the two 3DPW layouts (one stat per row and layout);
  listings  datasets/layouts.py `check_layouts` (one `os.listdir` per folder, then set lookups).
Freshly written files sit in the page cache: on a cluster's network file system each stat is a round trip, so the
gap there is larger than measured here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from shardprep.datasets.layouts import Listing, check_layouts
from shardprep.datasets.pw3d import PW3DAnnotation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        per_folder = args.rows // args.folders
        rows = []
        for s in range(args.folders):
            sequence = f"scene{s:03d}_00"
            (root / sequence).mkdir()
            for frame in range(per_folder):
                (root / sequence / f"{sequence}_image_{frame:05d}.jpg").touch()
                rows.append(("train", len(rows), f"{sequence}_participant0_frame{frame:05d}.jpg",
                             {"sequence": sequence, "frame": frame}))
        layouts = list(PW3DAnnotation.layouts.values())
        start = time.perf_counter()
        naive = [sum(not (root / layout.relative(name, fields)).is_file() for _, _, name, fields in rows)
                 for layout in layouts]
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        fits = check_layouts(rows, layouts, Listing(root))
        listing_s = time.perf_counter() - start
        assert [fit.missing for fit in fits] == naive
        print(f"{len(rows)} rows, {args.folders} folders, {len(layouts)} layouts")
        print(f"naive     {naive_s:.3f} s  ({len(rows) * len(layouts) / naive_s:,.0f} lookups/s)")
        print(f"listings  {listing_s:.3f} s  ({len(rows) * len(layouts) / listing_s:,.0f} lookups/s)")


if __name__ == "__main__":
    main()
