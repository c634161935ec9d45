"""The tracker tool's private helpers: same module name as the camera tool's, other contents."""

NAME = "tracker"
POINTS = 8


def track(depth, poses):
    """Stand-in 3D tracks (T, POINTS, 3): a grid of points lifted by depth and moved by the camera."""
    import numpy as np

    frames = depth.shape[0]
    tracks = np.zeros((frames, POINTS, 3), dtype=np.float32)
    tracks[:, :, 0] = np.arange(POINTS)[None, :] + poses[:, 0, 3][:, None]
    tracks[:, :, 1] = np.arange(frames)[:, None]
    tracks[:, :, 2] = depth.reshape(frames, -1).mean(axis=1)[:, None]
    return tracks
