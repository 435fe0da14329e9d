"""`AudioEncoder`: the base class of the audio encoders in
`keras_mm.registry.AUDIO_ENCODERS`."""

import keras
from keras import ops


class AudioEncoder(keras.layers.Layer):
    """Base class of an `AudioTower` encoder architecture.

    An audio encoder maps the tower's normalized features `[batch, frames,
    bins]` (a log-mel or MFCC spectrogram) to a sequence `[batch, steps,
    channels]`. `AudioTower(encoder=NAME)` looks `NAME` up in
    `keras_mm.registry.AUDIO_ENCODERS`, builds the class with the tower
    arguments its `__init__` names, projects the sequence to the tower's
    `dim` (unless `projected`), applies the output dropout, and returns
    the sequence or `pool()` of it. A new architecture is a subclass
    registered there that defines `call(features, training=None)`,
    `steps(frames)` (the output length for `frames` input frames; None
    where unknown) and `compute_output_shape`; `projected = True` where its
    output already has the tower's width (it then takes a `dim` argument).

    `legacy_path` names where the encoder's sublayers sat in the weights of
    an `AudioTower` saved before this registry existed (`""`: directly
    under the tower).

    Call arguments:
        inputs: float `[batch, frames, bins]`.
        training: Python bool (dropout, batch norm).

    Example:

    A user's architecture, which `AudioTower(encoder="frames")` then builds:

    >>> from keras_mm.registry import AUDIO_ENCODERS
    >>> class Frames(AudioEncoder):
    ...     def call(self, inputs, training=None):
    ...         return inputs
    ...     def compute_output_shape(self, input_shape):
    ...         return tuple(input_shape)
    >>> _ = AUDIO_ENCODERS.register("frames")(Frames)
    >>> from keras_mm.towers import AudioTower
    >>> tower = AudioTower(encoder="frames", frontend=None, dim=8)
    >>> tuple(tower(keras.random.uniform((2, 20, 16))).shape)
    (2, 8)
    >>> AUDIO_ENCODERS.unregister("frames")
    """

    projected = False
    legacy_path = ""

    def steps(self, frames):
        return frames

    def pool(self, features):
        return ops.mean(features, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None
