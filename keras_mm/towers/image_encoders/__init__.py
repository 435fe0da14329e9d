"""`ImageTower`'s encoder architectures, one class per file, registered in
`keras_mm.registry.IMAGE_ENCODERS` under the name `ImageTower(encoder=...)`
takes."""

from keras_mm.towers.image_encoder import ImageEncoder
from keras_mm.towers.image_encoders.cnn_image_encoder import CNNImageEncoder
from keras_mm.towers.resnet_backbone import ResNetBackbone
from keras_mm.towers.image_encoders.applications_image_encoder import (
    ApplicationsImageEncoder)
from keras_mm.towers.image_encoders.vit_image_encoder import ViTImageEncoder

__all__ = ["ApplicationsImageEncoder", "CNNImageEncoder", "ImageEncoder",
           "ResNetBackbone", "ViTImageEncoder"]
