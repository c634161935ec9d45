# Lines run in each array task's batch script before Python starts (submitit `setup`).
# Rendered with Python's string.Template from `cluster.setup` in the config; empty lines are dropped.
${module_loads}
${activate}
${extra}
export OMP_NUM_THREADS=${cpus_per_task}
export PYTHONUNBUFFERED=1
