"""From the cluster config to submitit parameters: the setup template and the sbatch options."""

from pathlib import Path

import pytest

from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import make_executor, render_setup


def cluster(*overrides: str) -> dict:
    return load_config(["cluster=slurm", *overrides])["cluster"]


def test_setup_template_renders_module_loads_activation_and_extra_lines() -> None:
    lines = render_setup(cluster("cluster.setup.modules=[cuda/12.1,gcc]", "cluster.setup.activate='conda activate sp'",
                                 "cluster.setup.extra=['ulimit -n 4096']", "cluster.cpus_per_task=6"))
    assert lines == ["module load cuda/12.1", "module load gcc", "conda activate sp", "ulimit -n 4096",
                     "export OMP_NUM_THREADS=6", "export PYTHONUNBUFFERED=1"]


def test_missing_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="template"):
        render_setup(cluster("cluster.setup.template=nope.sh"))


def test_slurm_parameters_reach_submitit(tmp_path: Path) -> None:
    settings = cluster("cluster.partition=gpu", "cluster.account=lab", "cluster.qos=high", "cluster.exclude=node7",
                       "cluster.gpus_per_task=2", "cluster.array_parallelism=8", "+cluster.additional.reservation=r1")
    executor = make_executor(settings, "slurm", tmp_path, "job")
    parameters = executor.parameters
    assert parameters["partition"] == "gpu" and parameters["account"] == "lab" and parameters["qos"] == "high"
    assert parameters["exclude"] == "node7" and parameters["gpus_per_node"] == 2
    assert parameters["array_parallelism"] == 8
    # --requeue always: a preempted task, or one whose node failed, is requeued even where JobRequeue=0
    assert parameters["additional_parameters"] == {"requeue": True, "reservation": "r1"}
