"""The depth stage with the real model code (RTMDet-tiny, RTMPose-t, a tiny Depth Anything V2 metric, all with
random weights) on the demo dataset: in process, through the runtime with bad inputs, and through the real SLURM
array with shards=2."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import SLURM_TEST_CLUSTER, launch
from shardprep.runtime.npz import read_npz
from shardprep.stages.depth.files import STACK

_missing = [name for name in STACK if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(bool(_missing), reason=f"model stack not installed ({', '.join(_missing)} missing): "
                                              "bash install.sh"),
]

from models.depth_models import RTMDET_TINY, model_overrides, rtmdet_checkpoint, tiny_depth_anything

SHAPES = {"keypoints": ((17, 2), np.float32), "scores": ((17,), np.float32), "depth_point": ((17,), np.float32),
          "depth_min": ((17,), np.float32), "depth_max": ((17,), np.float32), "in_image": ((17,), np.bool_),
          "bbox": ((5,), np.float32), "image_size": ((2,), np.int32), "detected": ((), np.bool_),
          "depth_radius": ((), np.int32)}
MAX_DEPTH = 20


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for the tiny random-weight models (RTMDet checkpoint and Depth Anything folder built once)."""
    folder = tmp_path_factory.mktemp("depth-models")
    return model_overrides(tiny_depth_anything(folder / "tiny-da-v2-metric", MAX_DEPTH),
                           rtmdet_checkpoint(folder / "rtmdet-tiny.pth"))


def check_frame(arrays: dict[str, np.ndarray], image_size=(512, 512)) -> None:
    for key, (shape, dtype) in SHAPES.items():
        assert arrays[key].shape == shape and arrays[key].dtype == dtype, (key, arrays[key].shape, arrays[key].dtype)
    assert arrays["image_size"].tolist() == list(image_size)
    assert int(arrays["depth_radius"]) == 3
    if arrays["detected"]:
        assert np.all(arrays["depth_min"] <= arrays["depth_point"])
        assert np.all(arrays["depth_point"] <= arrays["depth_max"])
        assert np.all((arrays["depth_min"] > 0) & (arrays["depth_max"] < MAX_DEPTH))
        x1, y1, x2, y2, _ = arrays["bbox"]
        assert 0 <= x1 < x2 <= image_size[1] and 0 <= y1 < y2 <= image_size[0]
    else:
        assert not arrays["keypoints"].any() and not arrays["scores"].any() and not arrays["depth_point"].any()


def test_stage_in_process_with_features_and_bad_payloads(models: list[str], demo_root: Path):
    from shardprep.runtime.build import build_dataset, build_stage
    from shardprep.runtime.config import load_config
    from shardprep.stages.base import Work

    config = load_config(["stage=depth", "dataset=demo", f"dataset.root={demo_root}", *models, "stage.features=true"])
    dataset, stage = build_dataset(config), build_stage(config)
    dataset.validate()
    stage.validate()
    assert {"config.json", "rtmdet-tiny.pth"} <= {path.name for path in stage.fingerprint_files()}
    stage.setup()
    items = dataset.items()[:3]
    works = [Work(item, dataset.read(item), frozenset({"depth"})) for item in items]
    works[1].payload["bbox_gt"] = np.zeros(4, np.float32)          # all-zero annotation row: highest-score box
    works.append(Work(items[2], {"image": np.zeros((0, 5, 3), np.uint8), "bbox_gt": np.zeros(4)}))
    works.append(Work(items[2], {"row": {}}))
    results = stage.process(stage.prepare(works))
    assert len(results) == 5
    for result in results[:3]:
        check_frame(result["depth"])
        # RTMPose-t's last backbone map has 384 channels; the tiny depth decoder's fused map 16.
        assert result["depth"]["pose_features"].shape == (17, 384)
        assert result["depth"]["depth_features"].shape == (17, 16)
        assert result["depth"]["pose_features"].dtype == result["depth"]["depth_features"].dtype == np.float16
    assert results[0]["depth"]["detected"] and results[1]["depth"]["detected"]
    assert isinstance(results[3], ValueError) and "too small" in str(results[3])
    assert isinstance(results[4], ValueError) and "RGB 'image'" in str(results[4])


@pytest.mark.parametrize("way", ["eager", "fixed blocks, too few", "cuda graph", "cuda graph, too few blocks"])
def test_batched_person_decoding_matches_mmdets_own(models: list[str], way: str):
    """The stage's batched person-only decoding gives the person boxes of mmdet's own `predict_by_feat` (with
    nms_pre and max_per_img large enough that other classes take no places), on RTMDet-tiny's head with head
    outputs drawn at random (continuous scores: no ties, whose NMS order is arbitrary) for two resized sizes.
    Every way the stage runs it: eager (a host sync a block), replayed from a CUDA graph of fixed blocks, and with
    fewer blocks than the walk needs (decoded again, to the end; on the CPU the graph's function runs as it is)."""
    import torch

    from shardprep.stages.depth.files import resolve_config
    from shardprep.stages.depth.models import Detector
    from shardprep.stages.depth.person_boxes import PersonBoxes

    device = torch.device("cuda" if way.startswith("cuda") else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA-graph decoding runs on a GPU only")
    checkpoint = next(value.split("=", 1)[1] for value in models if value.startswith("stage.detector.checkpoint="))
    test_cfg = {"nms_pre": 10**6, "score_thr": 0.3, "nms": {"type": "nms", "iou_threshold": 0.6},
                "max_per_img": 10**6}
    detector = Detector(resolve_config(RTMDET_TINY), checkpoint, torch.device("cpu"), "fp32", 0, test_cfg)
    head, generator = detector.model.bbox_head, torch.Generator().manual_seed(1)
    cls_scores = [torch.randn(2, 80, size, size, generator=generator) - 2.5 for size in (80, 40, 20)]
    bbox_preds = [torch.rand(2, 4, size, size, generator=generator) * 3 * stride
                  for size, stride in ((80, 8), (40, 16), (20, 32))]
    resized = [(480, 640), (640, 384)]
    decoding = PersonBoxes(head, detector.decoding, cuda_graphs=way != "eager", blocks=1 if "few" in way else 8)
    if device.type == "cpu" and decoding.replays is not None:
        decoding.replays.enabled = False
    ours = decoding([score.to(device) for score in cls_scores], [pred.to(device) for pred in bbox_preds], resized)
    assert decoding.decoded_again == (1 if "few" in way else 0) or way == "cuda graph"
    metas = [{"img_shape": size, "scale_factor": (1.0, 1.0)} for size in resized]
    theirs = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=metas, rescale=False)
    for (our_boxes, our_scores), result in zip(ours, theirs):
        person = result.labels == 0
        assert 0 < int(person.sum()) < len(person)  # other classes were there too
        torch.testing.assert_close(torch.from_numpy(our_scores), result.scores[person])
        torch.testing.assert_close(torch.from_numpy(our_boxes), result.bboxes[person])


def test_compiled_depth_model_matches_eager_pads_partial_batches_and_keeps_features(tmp_path: Path):
    """stage.depth.compile: the compiled network (inductor, on the CPU here) gives the eager outputs, decoder
    features included, for a full batch and for a partial one padded to the batch size."""
    import torch

    from shardprep.stages.depth.models import DepthEstimator

    folder = tiny_depth_anything(tmp_path / "tiny-da", MAX_DEPTH)
    eager = DepthEstimator(folder, torch.device("cpu"), "fp32", features=True, batch_size=3, compile=False)
    compiled = DepthEstimator(folder, torch.device("cpu"), "fp32", features=True, batch_size=3, compile=True)
    frames = torch.randint(0, 256, (3, 3, 60, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for batch in (frames, frames[:1]):
        (depth, maps), (expected_depth, expected_maps) = compiled(batch), eager(batch)
        assert depth.shape == expected_depth.shape and maps.shape == expected_maps.shape
        torch.testing.assert_close(depth, expected_depth, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(maps, expected_maps, atol=1e-4, rtol=1e-4)


def test_a_failed_compile_falls_back_to_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture):
    import torch

    from shardprep.stages.depth.models import DepthEstimator

    def broken_compiler(model, **options):
        def run(*inputs):
            raise torch._dynamo.exc.TorchDynamoException("no C compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compiler)
    folder = tiny_depth_anything(tmp_path / "tiny-da", MAX_DEPTH)
    estimator = DepthEstimator(folder, torch.device("cpu"), "fp32", batch_size=2, compile=True)
    frames = torch.zeros((1, 3, 40, 40), dtype=torch.uint8)
    depth, _ = estimator(frames)
    assert depth.shape == (1, 518, 518) and estimator.network.compiled is None
    assert "torch.compile of the depth model failed (no C compiler found)" in caplog.text


def test_gt_box_mode_of_the_dataset_overrides_the_detector(models: list[str], demo_root: Path):
    """3DPW-style payloads (`use_gt_box`) take their annotated box even when the stage runs RTMDet."""
    from shardprep.runtime.build import build_dataset, build_stage
    from shardprep.runtime.config import load_config
    from shardprep.stages.base import Work

    config = load_config(["stage=depth", "dataset=demo", f"dataset.root={demo_root}", *models])
    dataset, stage = build_dataset(config), build_stage(config)
    dataset.validate()
    stage.setup()
    item = dataset.items()[0]
    payload = {**dataset.read(item), "bbox_gt": np.array([100, 50, 400, 500], np.float32), "use_gt_box": True}
    (result,) = stage.process(stage.prepare([Work(item, payload, frozenset({"depth"}))]))
    assert result["depth"]["bbox"].tolist() == [100, 50, 400, 500, 1]


def bad_demo(demo_root: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of the demo annotations with a corrupt image, a 32-bit float image (no known range), a zero-size box and an
    all-zero row. (A missing image is refused at launch, tests/test_datasets.py.)"""
    from shardprep.datasets.demo import ANNOTATION, DemoDataset
    from shardprep.runtime.npz import write_npz

    demo = DemoDataset("demo", str(demo_root))
    demo.validate()  # generates the demo if this test runs first
    images = tmp / "images"
    shutil.copytree(demo.root / "images", images)
    with np.load(demo.root / ANNOTATION, allow_pickle=False) as data:
        arrays = {key: data[key].copy() for key in data.files}
    names = arrays["imgname"].tolist()
    (images / names[1]).write_bytes(b"not a jpeg")            # corrupt image
    Image.fromarray(np.ones((8, 8), np.float32), mode="F").save(images / names[2], format="TIFF")  # 32-bit float
    arrays["scale"][3] = 0.0                                   # zero-size box
    for key in ("center", "scale", "part", "S"):               # all-zero annotation row
        arrays[key][7] = 0
    annotation = tmp / "annotation.npz"
    write_npz(annotation, arrays)
    return annotation, images


def test_bad_inputs_are_recorded_and_the_shard_goes_on(models: list[str], demo_root: Path, tmp_path: Path):
    annotation, images = bad_demo(demo_root, tmp_path)
    out = tmp_path / "run"
    launch("depth.py", "dataset._target_=shardprep.datasets.mmpose_npz.MMPoseDataset", "~dataset.root",
           "~dataset.sequences", "~dataset.frames_per_sequence", "~dataset.subjects",
           f"+dataset.annotation={annotation}", f"+dataset.image_root={images}", "shards=2", f"out_dir={out}", "cluster=debug", "max_attempts=1",
           *models, "stage.detector.kind=gt", check=False)
    errors = [json.loads(line) for path in sorted((out / "errors").glob("*.jsonl"))
              for line in path.read_text().splitlines()]
    failed = {record["item"]: record for record in errors}
    assert len(failed) == 2, errors
    messages = " ".join(json.dumps(record) for record in errors)
    assert "cannot decode image" in messages and "intensity range is unknown" in messages
    frames = {path.stem: read_npz(path) for path in out.glob("checkpoints/shard-*/*.npz")}
    assert len(frames) == 10 and not set(frames) & set(failed)
    for arrays in frames.values():
        check_frame(arrays)
    undetected = sorted(item for item, arrays in frames.items() if not arrays["detected"])
    # The zero-size box (row 3) and the all-zero row (row 7): recorded frames without a person, not errors.
    names = np.load(annotation, allow_pickle=False)["imgname"].tolist()
    assert undetected == sorted(Path(names[row]).stem for row in (3, 7))


@pytest.mark.slurm
def test_demo_through_slurm_array(slurm, models: list[str], demo_root: Path, tmp_path: Path):
    out = tmp_path / "run"
    launch("depth.py", "dataset=demo", "shards=2", f"out_dir={out}", *SLURM_TEST_CLUSTER,
           *models, demo_root=demo_root)
    shards = sorted((out / "checkpoints").iterdir())
    assert [path.name for path in shards] == ["shard-00000", "shard-00001"]
    files = sorted(out.glob("checkpoints/shard-*/*.npz"))
    assert len(files) == 12
    for path in files:
        arrays = read_npz(path)
        check_frame(arrays)
        assert str(arrays["fingerprint"])
    assert not any(path.read_text().strip() for path in (out / "errors").glob("*.jsonl"))
