"""From the `cluster` config to a submitit executor, and submission of one array job.

Everything about the scheduler lives here: backend choice, sbatch parameters, the setup template, the array size
guard. What cannot be said through submitit's parameters goes through `slurm_templates/`, never a hand-built sbatch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

import submitit

from shardprep.runtime.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parent.parent / "slurm_templates"
BACKENDS = ("slurm", "local", "debug")


def resolve_backend(cluster: dict[str, Any]) -> str:
    backend = cluster["backend"]
    if backend == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if backend not in BACKENDS:
        raise ConfigError(f"cluster.backend={backend!r}: use one of auto, {', '.join(BACKENDS)}")
    if backend == "slurm" and not shutil.which("sbatch"):
        raise ConfigError("cluster=slurm but `sbatch` is not on PATH: run on a SLURM login node, or use cluster=local")
    return backend


def render_setup(cluster: dict[str, Any]) -> list[str]:
    """The setup template, filled from `cluster.setup`, as the lines submitit puts before the task command."""
    setup = cluster.get("setup") or {}
    template_path = TEMPLATES / setup.get("template", "setup.sh")
    if not template_path.is_file():
        raise ConfigError(f"slurm template {template_path} not found")
    values = {
        "module_loads": "\n".join(f"module load {name}" for name in setup.get("modules") or []),
        "activate": setup.get("activate") or "",
        "extra": "\n".join(setup.get("extra") or []),
        "cpus_per_task": cluster["cpus_per_task"],
    }
    try:
        text = Template(template_path.read_text()).substitute(values)
    except (KeyError, ValueError) as error:
        raise ConfigError(f"slurm template {template_path}: unknown or bad placeholder {error}") from None
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def max_array_size() -> int | None:
    """MaxArraySize of the cluster (`scontrol show config`), or None where it cannot be read."""
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", shown.stdout, re.MULTILINE)
    return int(match.group(1)) if match else None


def check_array_size(tasks: int) -> None:
    limit = max_array_size()
    if limit is not None and tasks > limit:
        raise ConfigError(
            f"{tasks} array tasks exceed this cluster's MaxArraySize={limit}: use shards<={limit} "
            "(each shard then holds more items)"
        )


def slurm_parameters(cluster: dict[str, Any], job_name: str, after: str | None = None) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for `cluster`: the one translation of the config into sbatch options, used
    by the submission and by its `--test-only` preflight alike."""
    parameters: dict[str, Any] = {
        "job_name": job_name,
        "time": int(cluster["time_min"]),
        "mem": f"{int(float(cluster['mem_gb']) * 1024)}M",
        "cpus_per_task": int(cluster["cpus_per_task"]),
        "ntasks_per_node": 1,
        "nodes": 1,
        "array_parallelism": int(cluster["array_parallelism"]),
        "signal_delay_s": int(cluster["signal_delay_s"]),
        "setup": render_setup(cluster),
        # Requeued, not cancelled, when preempted (PreemptMode=REQUEUE) or when its node fails, also on clusters
        # whose JobRequeue is 0: a task resumes from its checkpoints, so running it again is always safe.
        "additional_parameters": {"requeue": True, **dict(cluster.get("additional") or {})},
    }
    if after:
        parameters["dependency"] = f"afterok:{after}"
        parameters["additional_parameters"]["kill_on_invalid_dep"] = "yes"
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if cluster.get(key):
            parameters[key] = cluster[key]
    if int(cluster["gpus_per_task"]) > 0:
        parameters["gpus_per_node"] = int(cluster["gpus_per_task"])
    return parameters


def make_executor(cluster: dict[str, Any], backend: str, log_dir: Path, job_name: str,
                  after: str | None = None) -> submitit.Executor:
    """An executor for `cluster`; on SLURM, `after` is a job id its jobs wait for (`afterok`: they start once that job
    succeeded, and are cancelled if it failed). Local and debug runs are sequential, so they need no dependency."""
    if backend == "debug":
        return submitit.DebugExecutor(folder=log_dir)
    if backend == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder=log_dir)
        executor.update_parameters(timeout_min=int(cluster["time_min"]), gpus_per_node=int(cluster["gpus_per_task"]))
        return executor
    executor = submitit.SlurmExecutor(folder=log_dir / "%j", max_num_timeout=int(cluster["max_requeues"]))
    executor.update_parameters(**slurm_parameters(cluster, job_name, after))
    return executor


def check_cluster_settings(cluster: dict[str, Any]) -> None:
    """Values SLURM would only reject with a traceback (or accept and never run): one line each."""
    for key in ("time_min", "cpus_per_task", "array_parallelism", "max_requeues", "signal_delay_s", "gpus_per_task"):
        value = cluster.get(key)
        minimum = 0 if key in ("max_requeues", "signal_delay_s", "gpus_per_task") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"cluster.{key}={value!r}: must be a whole number >= {minimum}")
    memory = cluster.get("mem_gb")
    if not isinstance(memory, (int, float)) or isinstance(memory, bool) or memory <= 0:
        raise ConfigError(f"cluster.mem_gb={memory!r}: must be a number of GB > 0 (e.g. cluster.mem_gb=16)")


def check_schedulable(cluster: dict[str, Any], job_name: str, tasks: int) -> None:
    """Ask SLURM (`sbatch --test-only`, nothing is queued) whether the array's request can ever run: a partition
    typo, or more CPUs / memory / GPUs than any node of the partition has, is refused here in one line instead of
    pending forever. Silent where sbatch cannot be asked."""
    from submitit.slurm.slurm import _make_sbatch_string

    from shardprep.runtime.scheduler import partition_limits

    parameters = slurm_parameters(cluster, job_name)
    with tempfile.TemporaryDirectory(prefix="shardprep-test-only-") as folder:
        script = Path(folder) / "test.sh"
        # map_count makes it an array request, as the real submission is
        script.write_text(_make_sbatch_string(command="true", folder=folder, map_count=tasks, **parameters))
        try:
            answer = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                                    timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return
    if answer.returncode == 0:
        return
    said = "; ".join(line.strip() for line in answer.stderr.splitlines() if line.strip()) or "refused"
    gpus = int(cluster["gpus_per_task"])
    request = (f"{int(cluster['cpus_per_task'])} CPUs, {cluster['mem_gb']} GB, {gpus} GPU(s), "
               f"{int(cluster['time_min'])} min per task, partition {cluster.get('partition') or '(default)'}")
    limits = partition_limits(cluster.get("partition"))
    raise ConfigError(
        f"SLURM would never run this array ({request}): sbatch --test-only says: {said}"
        + (f"; the cluster has {limits}" if limits else "")
        + ": change cluster.partition / cpus_per_task / mem_gb / gpus_per_task / time_min to fit"
    )


def submit_array(executor: submitit.Executor, task: Any, shards: Sequence[int]) -> list[submitit.Job]:
    """Submit `task(shard)` for every shard as ONE array job (one sbatch), however many shards."""
    return executor.map_array(task, list(shards))
