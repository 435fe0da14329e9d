"""Pretrained towers and their preprocessors.

- keras-hub presets (`preset:` on an input): text and image backbones with
  the preset's tokenizer / image converter as a keras_mm preprocessor, so
  that it runs in tf.data and inside the exported SavedModel;
- TF-Hub / SavedModel modules (`hub:` on an input).

Importing this package registers the towers in
`keras_mm.registry.PRETRAINED_TOWERS` and the preprocessors in
`keras_mm.registry.PREPROCESSORS`, under `"<modality>_preset"` /
`"<modality>_hub"`. keras-hub itself is imported on first use.
"""

import importlib

# The modules that register a pretrained tower or preprocessor.
_MODULES = ("text_preset_preprocessor", "text_preset_tower",
            "image_preset_preprocessor", "image_preset_tower",
            "audio_preset_preprocessor", "audio_preset_tower",
            "video_preset_preprocessor", "video_preset_tower",
            "hub_text_preprocessor", "hub_text_tower", "hub_image_tower")

for _name in _MODULES:
    importlib.import_module(f"keras_mm.pretrained.{_name}")
