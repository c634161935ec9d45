"""Previews of the depth stage: where a resize or padding mistake between detector, pose and depth model shows.

Per sampled frame, side by side on the frame's pixel grid: the frame with the chosen box and the H36M-17 skeleton
coloured by keypoint score; where the stage's models load here, the depth map as the stage samples it (the model's
output upsampled to the frame, bilinear with aligned corners) with the same skeleton on it; and each joint's
depth_point with its disk min/max. With the depth map, the depth read back at the stored keypoints is compared with
the stored depth_point: a mismatch means the stored numbers do not come from this frame's map as drawn.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from shardprep.report.previews import Card, PreviewJob, write_figure
from shardprep.runtime.npz import read_npz

log = logging.getLogger(__name__)


class DepthPreview:
    def __init__(self, depth_map: bool = True) -> None:
        self.depth_map = depth_map  # false: never load the models (the preview then shows the stored numbers only)

    def __call__(self, job: PreviewJob) -> list[Card]:
        models, why_not = self._models(job) if self.depth_map and job.items else (None, "depth_map=false")
        cards = []
        for index, (item, files) in enumerate(zip(job.items, job.files)):
            arrays = read_npz(files["depth"])
            payload = job.dataset.read(item)
            depth = frame_depth(models, payload["image"]) if models is not None else None
            card = Card(item.id)
            card.images.append(draw(payload["image"], arrays, depth, job.images_dir / f"depth-{index:03d}.png"))
            card.facts = facts(arrays, depth)
            if depth is None:
                card.notes.append(f"no depth map: the stage's models did not load here ({why_not})")
            cards.append(card)
        return cards

    @staticmethod
    def _models(job: PreviewJob) -> tuple[Any, str]:
        try:
            job.stage.setup()
        except Exception as error:  # a report is still worth having without the map; it says why it has none
            log.warning("depth preview without depth maps: the stage's models did not load (%s)", error)
            return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return job.stage.models, ""


def frame_depth(models: Any, image: np.ndarray) -> np.ndarray:
    """(H, W) metres on the frame's pixel grid: the depth model's output upsampled as the stage samples it."""
    import torch
    import torch.nn.functional as F

    frame = torch.from_numpy(np.ascontiguousarray(image)).to(models.device).permute(2, 0, 1)
    depth, _ = models.depth(frame[None])
    upsampled = F.interpolate(depth[:, None].float(), size=image.shape[:2], mode="bilinear", align_corners=True)
    return upsampled[0, 0].cpu().numpy()


def skeleton_links() -> list[tuple[int, int]]:
    """The H36M-17 bones, from MMPose's own dataset description of Human3.6M."""
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    return list(parse_pose_metainfo({"from_file": "configs/_base_/datasets/h36m.py"})["skeleton_links"])


def joint_names() -> list[str]:
    from shardprep.datasets.joints import H36M

    return list(H36M)


def draw_skeleton(axes: Any, keypoints: np.ndarray, scores: np.ndarray) -> Any:
    for a, b in skeleton_links():
        axes.plot(keypoints[[a, b], 0], keypoints[[a, b], 1], color="white", linewidth=1.5, alpha=0.8)
    return axes.scatter(keypoints[:, 0], keypoints[:, 1], c=scores, cmap="viridis", s=22, edgecolors="black",
                        linewidths=0.5, vmin=0.0, vmax=max(1.0, float(scores.max())))


def draw(image: np.ndarray, arrays: dict[str, np.ndarray], depth: np.ndarray | None, path: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels = 3 if depth is not None else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), dpi=100)
    height, width = image.shape[:2]
    keypoints, scores = arrays["keypoints"], arrays["scores"]
    detected = bool(arrays["detected"])
    frame_axes = axes[0]
    frame_axes.imshow(image)
    if detected:
        x1, y1, x2, y2, box_score = (float(v) for v in arrays["bbox"])
        frame_axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.5))
        points = draw_skeleton(frame_axes, keypoints, scores)
        figure.colorbar(points, ax=frame_axes, fraction=0.046, pad=0.02, label="keypoint score")
        frame_axes.set_title(f"frame {width}x{height}, box score {box_score:.2f}", fontsize=9)
    else:
        frame_axes.set_title("no person detected", fontsize=9)
    if depth is not None:
        depth_axes = axes[1]
        shown = depth_axes.imshow(depth, cmap="magma_r", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        bar = figure.colorbar(shown, ax=depth_axes, fraction=0.046, pad=0.02, label="depth (m)")
        bar.formatter.set_useOffset(False)  # metres as they are, not as an offset plus 1e-4 steps
        bar.update_ticks()
        if detected:
            draw_skeleton(depth_axes, keypoints, scores)
        depth_axes.set_title("depth map on the frame's pixel grid", fontsize=9)
    for shown_axes in axes[: panels - 1]:
        shown_axes.set_xlim(-0.5, width - 0.5)
        shown_axes.set_ylim(height - 0.5, -0.5)
        shown_axes.axis("off")
    joint_axes = axes[-1]
    names = joint_names()
    rows = np.arange(len(names))
    if detected:
        point, low, high = arrays["depth_point"], arrays["depth_min"], arrays["depth_max"]
        joint_axes.errorbar(point, rows, xerr=[point - low, high - point], fmt="o", markersize=4, capsize=3)
    joint_axes.set_yticks(rows, names, fontsize=7)
    joint_axes.ticklabel_format(axis="x", useOffset=False)
    joint_axes.invert_yaxis()
    joint_axes.set_xlabel(f"depth (m): point, min-max over radius {int(arrays['depth_radius'])} px")
    joint_axes.grid(alpha=0.3)
    figure.tight_layout()
    return write_figure(figure, path)


def facts(arrays: dict[str, np.ndarray], depth: np.ndarray | None) -> list[tuple[str, str]]:
    rows = [("detected", str(bool(arrays["detected"]))),
            ("image size (h, w)", " x ".join(str(int(v)) for v in arrays["image_size"])),
            ("box (x1, y1, x2, y2, score)", ", ".join(f"{v:.1f}" for v in arrays["bbox"])),
            ("mean keypoint score", f"{float(arrays['scores'].mean()):.3f}"),
            ("joints inside the image", f"{int(arrays['in_image'].sum())}/{len(arrays['in_image'])}"),
            ("depth_point range (m)", f"{float(arrays['depth_point'].min()):.3f} .. "
                                      f"{float(arrays['depth_point'].max()):.3f}")]
    if depth is not None and bool(arrays["detected"]):
        from shardprep.stages.depth.geometry import pixel_of

        pixels, _ = pixel_of(arrays["keypoints"], depth.shape)
        again = depth[pixels[:, 1], pixels[:, 0]]
        rows.append(("max |map at keypoints - depth_point| (m)",
                     f"{float(np.abs(again - arrays['depth_point']).max()):.4f}"))
    return rows
