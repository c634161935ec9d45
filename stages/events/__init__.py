"""The DSEC events stage: per clip an event array, an event image, the clip's frames and an MP4."""
