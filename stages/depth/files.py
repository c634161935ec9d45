"""Where the depth stage's model files are, without importing the model stack (the launcher checks them before
submitting, possibly on a login node without torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shardprep.runtime.errors import ConfigError

STACK = ("torch", "mmcv", "mmdet", "mmpose", "transformers")


def check_stack() -> None:
    missing = [name for name in STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the depth stage needs {', '.join(missing)}, not installed in this Python: run "
                          "`bash install.sh` (docs/model-stack.md)")


def resolve_config(spec: str) -> Path:
    """A config path, or `mmdet::rel/path.py` / `mmpose::rel/path.py` for a config shipped in that package's wheel."""
    if "::" not in spec:
        return Path(spec).expanduser()
    package, relative = spec.split("::", 1)
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"config {spec!r}: package {package!r} is not installed (install the model stack: "
                          "bash install.sh)")
    return Path(next(iter(found.submodule_search_locations))) / ".mim" / "configs" / relative


def resolve_depth_model(spec: str) -> Path:
    """A local Depth Anything directory, a hub id already in the local Hugging Face cache (never downloads), or
    `random:<size>` for a random-weight model (demo runs; see random_models.py)."""
    if spec.startswith("random:"):
        from shardprep.stages.depth.random_models import random_depth_model

        return random_depth_model(spec.removeprefix("random:"))
    path = Path(spec).expanduser()
    if path.is_dir():
        return checked_model_folder(path)
    if spec.count("/") == 1 and not path.exists():
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return checked_model_folder(Path(snapshot_download(spec, local_files_only=True)))
        except (LocalEntryNotFoundError, OSError):
            pass
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        raise ConfigError(f"depth model {spec!r}: no such directory; set stage.depth.model to a downloaded Depth "
                          f"Anything folder (`huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf "
                          f"--local-dir DIR`)")
    raise ConfigError(f"depth model {spec!r} is neither a directory nor a hub id in the local cache: download it on a "
                      f"machine with internet (`huggingface-cli download {spec}`) and set stage.depth.model to it")


WEIGHTS = ("*.safetensors", "*.bin")


def checked_model_folder(path: Path) -> Path:
    """`path`, refused when it cannot be a transformers model folder (`from_pretrained` reads config.json and the
    weights): an empty folder, or one whose download stopped, is found here and not in every task."""
    if not (path / "config.json").is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise ConfigError(f"stage.depth.model={path}: the folder {what}, so it is no Hugging Face model folder: "
                          "download the model into it (`huggingface-cli download <id> --local-dir ...`)")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHTS):
        raise ConfigError(f"stage.depth.model={path}: config.json but no weights (*.safetensors or *.bin): the "
                          "download stopped early; download the model again")
    return path
