"""A tiny random-weight keras-hub Whisper preset for tests (offline).

`whisper_preset(path)` writes, with keras-hub's own `save_to_preset`, a
`WhisperBackbone` preset (config.json, metadata.json, model.weights.h5)
plus its `WhisperAudioConverter` (audio_converter.json) and returns the
path. keras-hub 0.32 has no Whisper task class (`WhisperAudioToText`), and
the backbone and converter need no tokenizer, so none is written.

The backbone is the real shape at a tiny width: hidden 16, 1 encoder and
1 decoder layer (keras-hub's `num_layers` sets both), 2 heads,
intermediate 32, 80 mel bins, `max_encoder_sequence_length=3000` (the
real 30-s window: a 1500-row position table), a 32-token decoder
vocabulary and 8 decoder positions. The converter is keras-hub's default
(80 mels, FFT 400, stride 160, 16 kHz, 30 s). Weights are random, seeded
by `seed`, so the preset is the same on every run. Nothing is downloaded:
`Backbone.from_preset(path)` and `AudioConverter.from_preset(path)` read it
offline.
"""

import os

HIDDEN = 16
NUM_MELS = 80
SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
MAX_FRAMES = 3000


def whisper_backbone(seed=0, num_layers=1):
    """The tiny `WhisperBackbone` (random weights seeded by `seed`)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.WhisperBackbone(
        vocabulary_size=32, num_layers=num_layers, num_heads=2,
        hidden_dim=HIDDEN, intermediate_dim=32, num_mels=NUM_MELS,
        max_encoder_sequence_length=MAX_FRAMES,
        max_decoder_sequence_length=8)


def whisper_preset(path, seed=0, num_layers=1):
    """Writes the tiny Whisper backbone + audio converter preset; returns
    `path`."""
    import keras_hub

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    backbone = whisper_backbone(seed, num_layers)
    converter = keras_hub.layers.WhisperAudioConverter(
        num_mels=NUM_MELS, sampling_rate=SAMPLE_RATE,
        max_audio_length=WINDOW_SECONDS)
    backbone.save_to_preset(path)
    converter.save_to_preset(path)
    return path
