"""The camera tool's private helpers; a different `utils` from the tracker's (the clash the stage must avoid)."""

NAME = "camera"


def depth_from_frames(frames):
    """Stand-in depth: 1 + mean intensity, per pixel (T, H, W) float32."""
    return 1.0 + frames.astype("float32").mean(axis=-1) / 255.0
