"""A tiny Human3.6M in the release's raw layout, written the way the release is, for the convert stage's tests.

- `metadata.xml` in the release's form: `<mapping>` rows of `<td>` cells (header: two blank cells, S1..S11; then
  action id, subaction id, one file prefix per subject), `<actionnames>`, `<dbcameras><index2id>` with the four
  camera ids, `<w0>` one bracketed list of 300 numbers (6 extrinsics per camera x 11 subjects, then 9 intrinsics
  per camera), as MMPose's converter reads it.
- `S*/MyPoseFeatures/{D2_Positions,D3_Positions_mono}/<prefix>.<camera>.cdf`: real CDF files written by cdflib's
  writer, one zVariable `Pose` of one record (frames, 32 * 2 or 32 * 3), float64 [I: the release's dtype].
- `S*/Videos/<prefix>.<camera>.mp4`: H.264 yuv420p from the ffmpeg binary imageio-ffmpeg ships; frame i is one grey
  level (`grey(i)`), so a test can tell which frame was extracted. Videos are `extra_frames` longer than their CDFs,
  as some of the release's are.
Values come from a seeded generator: the same call writes the same CDFs and metadata.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from cdflib import cdfwrite

SUBJECTS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11"]
CAMERAS = ["54138969", "55011271", "58860488", "60457274"]
# (action id, subaction id, prefix per subject): action 1 (_ALL) is in the mapping but has no files (it is skipped).
MAPPING = [("1", "1", {s: "_ALL 1" for s in SUBJECTS}),
           ("2", "1", {**{s: "Directions 1" for s in SUBJECTS}, "S11": "Directions"})]
CONVERTED = ["S1", "S5", "S6", "S7", "S8", "S9", "S11"]
WIDTH, HEIGHT = 64, 48


def grey(frame: int) -> int:
    return (16 + 18 * frame) % 240


def metadata_xml(rng: np.random.Generator) -> str:
    header = "<tr><td></td><td></td>" + "".join(f"<td>{s}</td>" for s in SUBJECTS) + "</tr>"
    rows = [header] + ["<tr>" + f"<td>{a}</td><td>{b}</td>" + "".join(f"<td>{p[s]}</td>" for s in SUBJECTS) + "</tr>"
                       for a, b, p in MAPPING]
    extrinsics = []
    for _ in range(len(CAMERAS) * len(SUBJECTS)):
        extrinsics += [*rng.uniform(-np.pi, np.pi, 3), *rng.uniform(-3000, 3000, 3)]
    intrinsics = []
    for _ in CAMERAS:
        intrinsics += [*rng.uniform(1140, 1150, 2), *rng.uniform(490, 520, 2), *rng.normal(0, 0.1, 3),
                       *rng.normal(0, 0.001, 2)]
    w0 = " ".join(repr(float(v)) for v in extrinsics + intrinsics)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n<mapping>\n" + "\n".join(rows) + "\n</mapping>\n"
            "<actionnames><item>_ALL</item><item>Directions</item></actionnames>\n"
            "<dbcameras><index2id>" + "".join(f"<item>{c}</item>" for c in CAMERAS) + "</index2id></dbcameras>\n"
            f"<w0>[{w0}]</w0>\n</metadata>\n")


def write_cdf(path: Path, pose: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cdfwrite.CDF(str(path), cdf_spec={"Majority": "row_major"}, delete=True)
    writer.write_var({"Variable": "Pose", "Data_Type": cdfwrite.CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
                      "Dim_Sizes": list(pose.shape)}, var_data=pose[None])
    writer.close()


def write_video(path: Path, frames: int) -> None:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.concatenate([np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8)[None] for i in range(frames)])
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", "50", "-i", "-", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], input=pixels.tobytes(), check=True, capture_output=True)


def write_raw_h36m(root: Path, frames: int = 11, extra_frames: int = 2, seed: int = 0,
                   subjects: list[str] = CONVERTED) -> Path:
    """The raw tree under `root`; returns it."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.xml").write_text(metadata_xml(rng))
    for subject in subjects:
        for action, _, prefixes in MAPPING:
            if action == "1":
                continue
            for camera in CAMERAS:
                base = f"{prefixes[subject]}.{camera}"
                features = root / subject / "MyPoseFeatures"
                write_cdf(features / "D2_Positions" / f"{base}.cdf", rng.uniform(0, 1000, (frames, 64)))
                world = rng.uniform(-900, 900, (frames, 32, 3))
                world[..., 2] += 4500
                write_cdf(features / "D3_Positions_mono" / f"{base}.cdf", world.reshape(frames, 96))
                write_video(root / subject / "Videos" / f"{base}.mp4", frames + extra_frames)
    return root


# The release's per-subject archives and the folder each holds (extracted in one common folder they give the raw
# tree: members are `S1/Videos/<prefix>.<camera>.mp4`, `S1/MyPoseFeatures/D2_Positions/...`): names as the
# release's download page gives them [I: h36m-fetch's download/extract scripts, VideoPose3D's DATASETS.md].
RELEASE_ARCHIVES = {"Videos_{}.tgz": "Videos", "Poses_D2_Positions_{}.tgz": "MyPoseFeatures/D2_Positions",
                    "Poses_D3_Positions_mono_{}.tgz": "MyPoseFeatures/D3_Positions_mono"}


def pack_release_archives(raw: Path, target: Path, subjects: list[str] = CONVERTED) -> Path:
    """`target` with `metadata.xml` and the release's .tgz archives of the raw tree `raw`, nothing extracted."""
    import shutil
    import tarfile

    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw / "metadata.xml", target / "metadata.xml")
    for subject in subjects:
        for archive, folder in RELEASE_ARCHIVES.items():
            with tarfile.open(target / archive.format(subject), "w:gz") as tar:
                tar.add(raw / subject / folder, arcname=f"{subject}/{folder}")
    return target
