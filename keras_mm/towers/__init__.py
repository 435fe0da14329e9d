"""Modality towers: one encoder per input modality.

Importing this package registers every tower in `keras_mm.registry.TOWERS`
(keyed by modality).
"""

from keras_mm.towers.audio_tower import AudioTower
from keras_mm.towers.image_tower import ImageTower
from keras_mm.towers.sensor_tower import SensorTower
from keras_mm.towers.tabular_tower import TabularTower
from keras_mm.towers.text_tower import TextTower
from keras_mm.towers.video_tower import VideoTower

__all__ = ["AudioTower", "ImageTower", "SensorTower", "TabularTower",
           "TextTower", "VideoTower"]
