"""Tiny random-weight keras-hub image presets for tests (offline).

Each helper writes a preset folder with keras-hub's own `save_to_preset`
(config.json, metadata.json, model.weights.h5, image_converter.json, and
for the task preset task.json / preprocessor.json) and returns its path.
32x32 RGB images, hidden width 16, 1-2 layers, random weights seeded by
`seed`, so that the presets are the same on every run. Nothing is
downloaded: `Backbone.from_preset(path)` and
`ImageConverter.from_preset(path)` read them offline.

- `vit_preset(path)`: a `ViTImageClassifier` *task* preset (backbone,
  classifier head and `ViTImageClassifierPreprocessor` with its converter):
  patch 8 (16 patches + a class token), 2 layers; converter scale
  1/127.5, offset -1 (pixels to [-1, 1]), bilinear.
- `resnet_preset(path)`: a `ResNetBackbone` preset + `ResNetImageConverter`
  (ImageNet mean / std as scale and offset, the way keras-hub stores
  them); two stages of one basic block (64 then 16 filters: keras-hub
  wants 64 first, with `input_conv_filters=[64]`), 4x4x16 feature map.
- `clip_preset(path)`: a `CLIPBackbone` preset (vision encoder patch 8,
  2 layers, projection 12; a 1-layer text encoder) + `CLIPImageConverter`
  with bicubic resizing.
- `siglip_preset(path)`: a `SigLIPBackbone` preset (vision encoder patch 8,
  2 layers, its attention-pooling head; a 1-layer text encoder) +
  `SigLIPImageConverter` (pixels to [-1, 1]).

`IMAGE_SIZE` is (32, 32); `HIDDEN` the vision width (16).
"""

import os

IMAGE_SIZE = (32, 32)
HIDDEN = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _keras_hub():
    import keras
    import keras_hub
    return keras, keras_hub


def _seeded(seed):
    keras, _ = _keras_hub()
    keras.utils.set_random_seed(seed)


def _path(path):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def vit_preset(path, seed=0, num_classes=3):
    """Writes a tiny `ViTImageClassifier` task preset; returns `path`."""
    _, keras_hub = _keras_hub()
    path = _path(path)
    _seeded(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*IMAGE_SIZE, 3), patch_size=8, num_layers=2,
        num_heads=2, hidden_dim=HIDDEN, mlp_dim=32)
    converter = keras_hub.layers.ViTImageConverter(
        image_size=IMAGE_SIZE, scale=1.0 / 127.5, offset=-1.0)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(
        image_converter=converter)
    task = keras_hub.models.ViTImageClassifier(
        backbone=backbone, preprocessor=preprocessor,
        num_classes=num_classes)
    task.save_to_preset(path)
    return path


def resnet_preset(path, seed=0):
    """Writes a tiny `ResNetBackbone` + converter preset; returns `path`."""
    _, keras_hub = _keras_hub()
    path = _path(path)
    _seeded(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(None, None, 3))
    # keras-hub stores ImageNet mean / std as scale and offset.
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=IMAGE_SIZE,
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    backbone.save_to_preset(path)
    converter.save_to_preset(path)
    return path


def clip_preset(path, seed=0):
    """Writes a tiny `CLIPBackbone` + converter preset; returns `path`."""
    _, keras_hub = _keras_hub()
    path = _path(path)
    _seeded(seed)
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=8, hidden_dim=HIDDEN, num_layers=2, num_heads=2,
        intermediate_dim=32, image_shape=(*IMAGE_SIZE, 3))
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=50, embedding_dim=HIDDEN, hidden_dim=HIDDEN,
        num_layers=1, num_heads=2, intermediate_dim=32,
        max_sequence_length=8)
    backbone = keras_hub.models.CLIPBackbone(
        vision_encoder=vision, text_encoder=text, projection_dim=12)
    converter = keras_hub.layers.CLIPImageConverter(
        image_size=IMAGE_SIZE,
        scale=[1.0 / (255.0 * s) for s in (0.2686, 0.2613, 0.2758)],
        offset=[-m / s for m, s in zip((0.4815, 0.4578, 0.4082),
                                       (0.2686, 0.2613, 0.2758))],
        interpolation="bicubic")
    backbone.save_to_preset(path)
    converter.save_to_preset(path)
    return path


def siglip_preset(path, seed=0):
    """Writes a tiny `SigLIPBackbone` + converter preset; returns `path`."""
    _, keras_hub = _keras_hub()
    path = _path(path)
    _seeded(seed)
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=8, hidden_dim=HIDDEN, num_layers=2, num_heads=2,
        intermediate_dim=32, image_shape=(*IMAGE_SIZE, 3))
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=50, embedding_dim=HIDDEN, hidden_dim=HIDDEN,
        num_layers=1, num_heads=2, intermediate_dim=32,
        max_sequence_length=8)
    backbone = keras_hub.models.SigLIPBackbone(
        vision_encoder=vision, text_encoder=text)
    converter = keras_hub.layers.SigLIPImageConverter(
        image_size=IMAGE_SIZE, scale=1.0 / 127.5, offset=-1.0)
    backbone.save_to_preset(path)
    converter.save_to_preset(path)
    return path


PRESET_WRITERS = {"vit": vit_preset, "resnet": resnet_preset,
                  "clip": clip_preset, "siglip": siglip_preset}


def write_all(folder, seed=0):
    """Writes the four presets under `folder`; `{family: path}`."""
    folder = os.fspath(folder)
    return {family: writer(os.path.join(folder, family), seed=seed)
            for family, writer in PRESET_WRITERS.items()}
