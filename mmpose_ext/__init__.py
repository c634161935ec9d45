"""MMPose 1.x dataset classes for merged files MMPose cannot parse itself; import via `custom_imports`."""
