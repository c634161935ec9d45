"""Stages that run an external program (research code that is not a package) once per item, in its own process."""
