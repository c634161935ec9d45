"""A stage that runs an external tool once per item: a configuration instead of integration code.

Per item: resolve its inputs (the video, upstream stages' outputs), run the tool in its own process writing into a
scratch folder, retry smaller on out-of-memory, check every declared output file, and hand the runtime writers that
move the folders into place (the runtime renames them atomically and validates them again). Items run as parallel
processes, as many as fit on the GPU by measured memory (see gpu_packing).
"""

from __future__ import annotations

import logging
import shutil
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from shardprep.runtime.atomic import remove
from shardprep.runtime.errors import ConfigError
from shardprep.stages.base import ItemResult, Stage, Work
from shardprep.stages.external.command import Command, Outcome, log_tail, run
from shardprep.stages.external.gpu_packing import Packer, check_packing, make_source
from shardprep.stages.external.inputs import Upstream
from shardprep.stages.external.oom import DEFAULT_PATTERNS, OOMPolicy
from shardprep.stages.external.outputs import FolderOutput

log = logging.getLogger(__name__)

# Placeholders every command may use besides `python`, the options, the payload's fields and the OOM option.
BUILTIN_PLACEHOLDERS = {"input", "item", "output", "outputs", "inputs", "workdir", "log", "torch_peak"}
# `{torch_peak}`: the runner that runs a Python tool's script and reports torch's peak GPU memory (torch_peak.py).
TORCH_PEAK = Path(__file__).with_name("torch_peak.py")


class ToolError(RuntimeError):
    """The tool failed on an item: exit status, timeout, out-of-memory at the floor, or bad outputs."""


class ExternalStage(Stage):
    def __init__(self, name: str, command: str | Sequence[str], outputs: Mapping[str, Mapping[str, Any]],
                 log_dir: str, scratch_dir: str, cwd: str | None = None, python_env: str | None = None,
                 env: Mapping[str, Any] | None = None, timeout_s: float | None = None,
                 trust_checkpoints: bool = False, options: Mapping[str, Any] | None = None,
                 depends_on: Mapping[str, str] | None = None, oom: Mapping[str, Any] | None = None,
                 gpu: Mapping[str, Any] | None = None, batch_size: int | None = None, read_workers: int = 1,
                 model_files: Sequence[str] = ()) -> None:
        gpu = dict(gpu or {})
        self.max_workers = int(gpu.get("max_workers", 1))
        super().__init__(name, batch_size or 2 * self.max_workers, read_workers)
        self.command = Command.from_config(command, cwd, env, python_env, timeout_s, trust_checkpoints)
        self.folders = [FolderOutput.from_config(out, files) for out, files in (outputs or {}).items()]
        if not self.folders:
            raise ConfigError(f"stage {name}: declare at least one entry under stage.outputs")
        self.outputs = tuple(folder.file_output() for folder in self.folders)
        self.log_dir = Path(log_dir).expanduser()
        self.scratch_dir = Path(scratch_dir).expanduser()
        self.options = {str(key): value for key, value in (options or {}).items()}
        self.upstreams = [Upstream(dep, run_dir) for dep, run_dir in (depends_on or {}).items()]
        self.oom_config = dict(oom) if oom else None
        self.gpu = {"memory": "auto", "safety": 0.9, "total_mb": 0, **gpu}
        self.model_files = [Path(path).expanduser() for path in model_files]
        self.oom = self._make_oom()
        self.packer: Packer | None = None

    def _make_oom(self) -> OOMPolicy | None:
        if not self.oom_config:
            return None
        config = self.oom_config
        if "option" not in config or "start" not in config:
            raise ConfigError("stage.oom needs `option` (the placeholder holding the batch size) and `start`")
        return OOMPolicy(option=str(config["option"]), start=int(config["start"]),
                         factor=float(config.get("factor", 0.5)), floor=int(config.get("floor", 1)),
                         patterns=tuple(config.get("patterns") or DEFAULT_PATTERNS))

    def validate(self) -> None:
        known = BUILTIN_PLACEHOLDERS | set(self.options) | {"path", "start", "end"}
        if self.oom is not None:
            known.add(self.oom.option)
        self.command.validate(known)
        for upstream in self.upstreams:
            upstream.check()
        if self.gpu["memory"] not in ("auto", "nvml", "reported", "none"):
            raise ConfigError(f"stage.gpu.memory={self.gpu['memory']!r}: use auto, nvml, reported or none")
        check_packing(self.gpu["memory"], self.max_workers, float(self.gpu["safety"]), float(self.gpu["total_mb"]))

    def fingerprint_files(self) -> list[Path]:
        return self.model_files

    def upstream_fingerprints(self) -> dict[str, str]:
        return {upstream.name: upstream.manifest.fingerprint for upstream in self.upstreams}

    def setup(self) -> None:
        kind = str(self.gpu["memory"])
        source = make_source(kind, float(self.gpu["total_mb"]))
        workers = self.max_workers
        if source is None and kind == "auto" and workers > 1:
            # Nothing to measure with: packing blind could run the GPU out of memory, so one at a time.
            log.warning("%s: no NVML and no gpu.total_mb: running 1 tool at a time (set gpu.memory=none to run "
                        "gpu.max_workers=%d regardless)", self.name, workers)
            workers = 1
        self.packer = Packer(source, workers, float(self.gpu["safety"]))
        for upstream in self.upstreams:
            upstream.load()

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        """Run the batch's items, as many at once as the packer allows; results in batch order."""
        if self.packer is None:
            self.setup()
        assert self.packer is not None
        results: list[ItemResult | BaseException | None] = [None] * len(batch)
        pending = deque(enumerate(batch))
        running: dict[Future[ItemResult | BaseException], int] = {}
        workers = 0
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=f"{self.name}-item") as pool:
            while pending or running:
                target = self.packer.workers()
                if target != workers:
                    log.info("%s: %d worker(s) (peak %s MiB)", self.name, target, self.packer.peak_mb)
                    workers = target
                while pending and len(running) < target:
                    index, work = pending.popleft()
                    running[pool.submit(self._run_item, work)] = index
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
        return [result for result in results if result is not None]

    def _run_item(self, work: Work) -> ItemResult | BaseException:
        """Everything for one item; any failure is returned (recorded by the runtime), never raised."""
        item_dir = self.scratch_dir / work.item.id
        try:
            remove(item_dir)  # a killed earlier attempt's leftovers
            folders = {folder.name: item_dir / folder.name for folder in self.folders}
            values = self._placeholders(work, item_dir, folders)
            self._run_until_done(work, values, folders)
            return {name: _mover(path) for name, path in folders.items()}
        except Exception as error:
            remove(item_dir)
            return error

    def _placeholders(self, work: Work, item_dir: Path, folders: dict[str, Path]) -> dict[str, Any]:
        payload = work.payload if isinstance(work.payload, Mapping) else {"path": work.payload}
        inputs: dict[str, str] = {}
        for upstream in self.upstreams:
            paths = upstream.paths(work.item.id)
            inputs.update({f"{upstream.name}.{name}": str(path) for name, path in paths.items()})
            if len(paths) == 1:
                inputs[upstream.name] = str(next(iter(paths.values())))
        fields = {key: value for key, value in payload.items() if isinstance(value, (str, int, float, Path))}
        return {
            **self.options,
            **fields,
            "input": str(payload.get("path", "")),
            "item": work.item.id,
            "output": str(next(iter(folders.values()))),
            "outputs": {name: str(path) for name, path in folders.items()},
            "inputs": inputs,
            "workdir": str(item_dir),
            "log": str(self._log_path(work)),
            "torch_peak": str(TORCH_PEAK),
        }

    def _log_path(self, work: Work) -> Path:
        return self.log_dir / f"{work.item.id}.log"

    def _run_until_done(self, work: Work, values: dict[str, Any], folders: dict[str, Path]) -> None:
        """Run the tool, shrinking the OOM option after each recognised out-of-memory; raise `ToolError` if it fails."""
        size = self.oom.current if self.oom else None
        while True:
            for path in folders.values():  # each attempt starts from empty output folders
                remove(path)
                path.mkdir(parents=True)
            if self.oom is not None:
                values[self.oom.option] = size
            outcome = self._run_once(values, self._log_path(work))
            if outcome.ok:
                self._check_outputs(work, outcome, folders)
                if self.oom is not None and size is not None:
                    self.oom.succeeded(size)
                return
            tail = log_tail(outcome.log)
            if outcome.timed_out:
                raise ToolError(f"{self.name}: item {work.item.id} timed out after {outcome.seconds:.0f} s "
                                f"(stage.timeout_s); log {outcome.log}")
            if self.oom is not None and size is not None and self.oom.is_oom(tail):
                smaller = self.oom.smaller(size)
                if smaller is None:
                    raise ToolError(f"{self.name}: item {work.item.id} ran out of memory even at "
                                    f"{self.oom.option}={size} (stage.oom.floor); log {outcome.log}")
                log.warning("%s: item %s out of memory at %s=%d, retrying with %d", self.name, work.item.id,
                            self.oom.option, size, smaller)
                size = smaller
                continue
            raise ToolError(f"{self.name}: item {work.item.id}: tool exited with status {outcome.returncode}; "
                            f"log {outcome.log}; last lines:\n{tail}")

    def _run_once(self, values: dict[str, Any], log_path: Path) -> Outcome:
        assert self.packer is not None
        source = self.packer.source
        started: list[int] = []

        def on_start(pid: int) -> None:
            started.append(pid)
            if source is not None:
                source.start(pid)

        outcome: Outcome | None = None
        try:
            outcome = run(self.command, self.command.argv(values), log_path, on_start)
        finally:
            if source is not None and started:
                peak = source.finish(started[0], log_path)
                # Only a finished run's peak says what an item needs; a run that died of OOM says what did not fit.
                if outcome is not None and outcome.ok:
                    self.packer.observe(peak)
        return outcome

    def _check_outputs(self, work: Work, outcome: Outcome, folders: dict[str, Path]) -> None:
        for folder in self.folders:
            try:
                folder.validate(folders[folder.name])
            except ValueError as error:
                raise ToolError(f"{self.name}: item {work.item.id}: the tool exited 0 but output {folder.name!r} "
                                f"is unusable: {error}; log {outcome.log}") from None


def _mover(source: Path):
    """A file-output writer that moves the tool's finished folder to the runtime's temporary path."""

    def write(tmp: Path) -> None:
        shutil.move(source, tmp)
        try:
            source.parent.rmdir()  # the item's scratch folder, once its last output has moved
        except OSError:
            pass

    return write
