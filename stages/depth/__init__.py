"""The depth stage: person box (RTMDet or the annotated box), 2D keypoints (RTMPose), metric depth (Depth Anything V2)
and per-joint depth for every frame. `stage.DepthStage` is the entry point; the other modules are its parts."""
