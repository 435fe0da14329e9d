"""`VideoTower`'s encoder architectures, one class per file, registered in
`keras_mm.registry.VIDEO_ENCODERS` under the name `VideoTower(encoder=...)`
takes."""

from keras_mm.towers.video_encoder import VideoEncoder
from keras_mm.towers.video_encoders.conv3d_video_encoder import (
    Conv3DVideoEncoder)
from keras_mm.towers.video_encoders.frames_video_encoder import (
    FramesVideoEncoder)

__all__ = ["Conv3DVideoEncoder", "FramesVideoEncoder", "VideoEncoder"]
