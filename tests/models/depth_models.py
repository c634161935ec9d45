"""Random-weight model files for the depth stage's tests (nothing can be downloaded here).

RTMPose needs no file: its config ships in the mmpose wheel and checkpoint=None gives random weights. RTMDet with
fully random weights regresses sub-pixel boxes of random classes, so its checkpoint is random except the biases of
the box regression (person-sized boxes) and of the classifier (class 0, person, scores highest). Depth Anything V2
loads with `from_pretrained`, so a tiny metric config is saved to a folder.
"""

from __future__ import annotations

from pathlib import Path

from shardprep.stages.depth.random_models import Architecture, save_random_depth_model

# Smallest wheel-shipped configs of the production architectures: CPU time stays low.
RTMDET_TINY = "mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py"
RTMPOSE_T = "mmpose::body_2d_keypoint/rtmpose/body8/rtmpose-t_8xb256-420e_body8-256x192.py"


# A 4-layer, 32-wide DINOv2 backbone and small DPT widths: the real architecture at test cost.
TINY_DEPTH_ANYTHING = Architecture(32, 4, 2, 64, (1, 2, 3, 4), (8, 16, 32, 32), 16, 8)


def tiny_depth_anything(folder: Path, max_depth: int = 20) -> Path:
    """A tiny Depth Anything V2 metric model with seeded random weights, saved to `folder`."""
    save_random_depth_model(folder, TINY_DEPTH_ANYTHING, max_depth)
    return folder


def rtmdet_checkpoint(path: Path, config: str = RTMDET_TINY, distance: float = 3.0) -> Path:
    """An RTMDet checkpoint (tiny by default; the benchmark uses it for RTMDet-m): seeded random weights, except
    that each level's box regression outputs about `distance` strides to every side (boxes of 48-192 px) and the
    person class scores highest, so the detector finds person boxes on any frame."""
    import torch
    from mmdet.apis import init_detector

    from shardprep.stages.depth.files import resolve_config

    torch.manual_seed(0)
    model = init_detector(str(resolve_config(config)), None, device="cpu")
    with torch.no_grad():
        for conv in model.bbox_head.rtm_reg:
            conv.weight.mul_(0.01)
            conv.bias.fill_(distance)
        for conv in model.bbox_head.rtm_cls:
            conv.bias.fill_(-2.0)
            conv.bias[0] = 2.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def model_overrides(depth_dir: Path, detector_checkpoint: Path) -> list[str]:
    """Hydra overrides (after `stage=depth`) that run the depth stage with the tiny random-weight models on the CPU."""
    return [
        f"stage.detector.config={RTMDET_TINY}",
        f"stage.detector.checkpoint={detector_checkpoint}", "stage.detector.score_threshold=0.0",
        f"stage.pose.config={RTMPOSE_T}", "stage.pose.checkpoint=null", f"stage.depth.model={depth_dir}",
        "stage.batch_size=4", "stage.read_workers=2", "stage.device=cpu",
    ]
