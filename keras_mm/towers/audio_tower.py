import keras
from keras import ops

import keras_mm.towers.audio_encoders  # noqa: F401  (fills AUDIO_ENCODERS)
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_non_negative_float,
                                   check_positive_float, check_positive_int,
                                   config_value, plain)
from keras_mm.ops import audio_features
from keras_mm.registry import AUDIO_ENCODERS, TOWERS
from keras_mm.towers.encoder_arguments import make_encoder
from keras_mm.towers.legacy_weights import remap_legacy_encoder

OUTPUTS = ("vector", "sequence")
FRONTENDS = ("log_mel", "mfcc", None)
FEATURE_NORMS = ("layer", "batch", None)


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("audio")
class AudioTower(keras.layers.Layer):
    """Audio tower: encodes waveforms or spectrograms.

    With a `frontend`, the input is a raw mono waveform `[batch, samples]`
    and the features are computed in the graph by
    `keras_mm.ops.audio_features` (the same code as the audio
    preprocessor): `"log_mel"` gives `[batch, frames, num_mel_bins]`,
    `"mfcc"` gives `[batch, frames, num_mfcc]` (MFCCs of that log-mel).
    The features are always computed in float32 (also under mixed
    precision), then cast to the compute dtype. With `frontend=None` the
    input is already a spectrogram `[batch, frames, bins]` (e.g. from the
    preprocessor with `features="log_mel"`; never compute log-mel in both
    places). `frames = 1 + (samples - frame_length) // frame_step`.

    `feature_norm` then normalizes the features: `"layer"` (default) a
    layer normalization over the bins of each frame (stateless, so the
    same in training and inference, and robust to the large offsets of
    log energies), `"batch"` a batch normalization per bin (moving
    statistics that need many training steps to settle), None nothing.

    Encoders (`keras_mm.registry.AUDIO_ENCODERS`; one `AudioEncoder` class
    each, which the tower builds with the arguments below that its
    `__init__` names; a new architecture is a new registered class):

    - `"cnn"` (`CNNAudioEncoder`): VGGish-style 2-D convolutions over time x
      frequency, one block per entry of `filters` (3x3 convolution, ReLU, 2x2
      max pool; no batch norm, so training and inference behave alike), then
      each time step's frequency x channel features are projected to `dim`.
      Tokens: `ceil(frames / 2**len(filters))` time steps.
    - `"crnn"` (`CRNNAudioEncoder`): the same conv blocks pooling frequency
      only (time is kept), then a bidirectional GRU (`rnn_units` per direction)
      over time and a projection to `dim`. Tokens: `frames`.
    - `"transformer"` (`TransformerAudioEncoder`): each frame is a token: a
      dense embedding to `dim`, learned position embeddings and `num_layers`
      pre-norm transformer layers. Tokens: `frames`.

    Outputs: `output="sequence"` gives the time steps `[batch, tokens,
    dim]` (all valid: `compute_mask` returns None); `output="vector"` gives
    their mean `[batch, dim]`.

    Weights saved before the encoder registry (the encoder's sublayers
    directly under the tower) still load (`legacy_weights`).

    Args:
        encoder: `"crnn"` (default), `"cnn"` or `"transformer"`. The
            default is the encoder with the best held-out-speaker accuracy
            in `benchmarks/audio_heldout_speaker.py` (FSDD, train on 5
            speakers, test on the 6th: see BENCHMARKS.md); `"cnn"` trains
            2-3x faster and generalizes less to new voices.
        output: `"vector"` or `"sequence"` (kept as the attribute
            `output_mode`: `output` is a Keras Layer property).
        dim: output width.
        dropout: dropout rate on the output (and inside the transformer).
        frontend: `"log_mel"`, `"mfcc"` or None (spectrogram input).
        sample_rate: waveform sampling rate in Hz.
        frame_length, frame_step, fft_length: STFT sizes in samples
            (`fft_length=None`: next power of two >= frame_length).
        num_mel_bins: mel bands.
        lower_edge_hertz, upper_edge_hertz: mel filter bank range
            (`upper_edge_hertz=None` is the Nyquist frequency).
        log_offset: added to the mel energies before the log.
        num_mfcc: coefficients kept by the `"mfcc"` front end.
        feature_norm: `"layer"`, `"batch"` or None (see above).
        filters: channels per conv block (`cnn`, `crnn`).
        kernel_size: conv size (`cnn`, `crnn`).
        rnn_units: GRU units per direction (`crnn`); None means `dim`.
        num_layers, num_heads, intermediate_dim: transformer sizes.
        kernel_initializer: initializer of the conv kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float32 waveform `[batch, samples]` (with a front end) or
            spectrogram `[batch, frames, bins]` (`frontend=None`).
        training: Python bool (batch norm and dropout).
        mask: not supported (clips are cropped/padded to a fixed length by
            the preprocessor); must be None.

    Example:

    >>> wave = keras.random.normal((2, 8000))
    >>> tower = AudioTower(encoder="cnn", frontend="log_mel",
    ...                    sample_rate=8000, filters=(8, 16), dim=32)
    >>> tuple(tower(wave).shape)
    (2, 32)
    >>> tuple(tower.compute_features(wave).shape)  # 1 + (8000 - 256) // 128
    (2, 61, 40)
    """

    input_dtype = "float32"

    def __init__(self, encoder="crnn", output="vector", dim=64, dropout=0.0,
                 frontend="log_mel", sample_rate=8000, frame_length=256,
                 frame_step=128, fft_length=None, num_mel_bins=40,
                 lower_edge_hertz=20.0, upper_edge_hertz=None,
                 log_offset=1e-6, num_mfcc=13, feature_norm="layer",
                 filters=(32, 64), kernel_size=3, rnn_units=None,
                 num_layers=2, num_heads=4, intermediate_dim=None,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        name = "AudioTower"
        self.encoder = check_choice(name, "encoder", encoder,
                                    tuple(AUDIO_ENCODERS.names()))
        # `output` is a Keras Layer property: stored as `output_mode`.
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.frontend = check_choice(name, "frontend", frontend, FRONTENDS)
        self.sample_rate = check_positive_int(name, "sample_rate",
                                              sample_rate)
        self.frame_length = check_positive_int(name, "frame_length",
                                               frame_length)
        self.frame_step = check_positive_int(name, "frame_step", frame_step)
        self.fft_length = check_positive_int(name, "fft_length", fft_length,
                                             allow_none=True)
        self.num_mel_bins = check_positive_int(name, "num_mel_bins",
                                               num_mel_bins)
        self.lower_edge_hertz = check_non_negative_float(
            name, "lower_edge_hertz", lower_edge_hertz)
        self.upper_edge_hertz = check_positive_float(
            name, "upper_edge_hertz", upper_edge_hertz, allow_none=True)
        self.log_offset = check_positive_float(name, "log_offset",
                                               log_offset)
        self.num_mfcc = check_positive_int(name, "num_mfcc", num_mfcc)
        self.feature_norm = check_choice(name, "feature_norm", feature_norm,
                                         FEATURE_NORMS)
        self.filters = plain(filters)
        self.kernel_size = plain(kernel_size)
        self.rnn_units = plain(rnn_units)
        self.num_layers = plain(num_layers)
        self.num_heads = plain(num_heads)
        self.intermediate_dim = plain(intermediate_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # Created before the encoder: the weights (and optimizer slots) keep
        # the order of towers saved before the encoder registry.
        if self.feature_norm == "layer":
            self.feature_normalization = keras.layers.LayerNormalization(
                dtype=self.dtype_policy, name="feature_norm")
        elif self.feature_norm == "batch":
            self.feature_normalization = keras.layers.BatchNormalization(
                dtype=self.dtype_policy, name="feature_norm")
        # The encoder checks the arguments it takes (the others are kept
        # for get_config only).
        self.audio_encoder = make_encoder(
            AUDIO_ENCODERS, self.encoder,
            {"filters": self.filters, "kernel_size": kernel_size,
             "rnn_units": rnn_units, "num_layers": num_layers,
             "num_heads": num_heads, "intermediate_dim": intermediate_dim,
             "kernel_initializer": self.kernel_initializer, "dim": dim,
             "dropout": dropout},
            dtype=self.dtype_policy, name="audio_encoder")
        if self.frontend is not None:
            nyquist = self.sample_rate / 2.0
            upper = self.upper_edge_hertz or nyquist
            if upper > nyquist or self.lower_edge_hertz >= upper:
                raise ValueError(
                    f"{name}: need lower_edge_hertz < upper_edge_hertz <= "
                    f"sample_rate / 2 = {nyquist}; got "
                    f"{self.lower_edge_hertz} and {upper}")

    # -- front end ----------------------------------------------------------

    def compute_features(self, waveform):
        """The front end: float32 `[batch, frames, bins]` features.

        Exactly `keras_mm.ops.audio_features.log_mel_spectrogram` (and
        `mfcc` for `frontend="mfcc"`) with this tower's settings; without a
        front end the input is returned as float32.
        """
        x = ops.cast(waveform, "float32")
        if self.frontend is None:
            return x
        x = audio_features.log_mel_spectrogram(
            x, sample_rate=self.sample_rate, frame_length=self.frame_length,
            frame_step=self.frame_step, fft_length=self.fft_length,
            num_mel_bins=self.num_mel_bins,
            lower_edge_hertz=self.lower_edge_hertz,
            upper_edge_hertz=self.upper_edge_hertz,
            log_offset=self.log_offset)
        if self.frontend == "mfcc":
            x = audio_features.mfcc(x, num_mfcc=self.num_mfcc)
        return x

    def _feature_shape(self, input_shape):
        """(batch, frames, bins) of the front end output."""
        shape = tuple(input_shape)
        if self.frontend is None:
            if len(shape) != 3:
                raise ValueError(
                    "AudioTower(frontend=None) takes a spectrogram [batch, "
                    f"frames, bins]; got shape {shape} (pass "
                    "frontend='log_mel' for waveforms)")
            return shape
        if len(shape) != 2:
            raise ValueError(
                f"AudioTower(frontend={self.frontend!r}) takes a waveform "
                f"[batch, samples]; got shape {shape} (pass frontend=None "
                "for spectrograms)")
        samples = shape[1]
        frames = None if samples is None else audio_features.frame_count(
            samples, self.frame_length, self.frame_step)
        bins = self.num_mfcc if self.frontend == "mfcc" else \
            self.num_mel_bins
        if self.frontend == "mfcc":
            bins = min(bins, self.num_mel_bins)
        return (shape[0], frames, bins)

    # -- building -----------------------------------------------------------

    def build(self, input_shape):
        shape = self._feature_shape(input_shape)
        if shape[1] == 0:
            raise ValueError(
                f"AudioTower: {input_shape[1]} samples are shorter than "
                f"frame_length={self.frame_length}; give longer clips or a "
                "shorter frame_length")
        if shape[2] is None:
            raise ValueError("AudioTower needs a known number of feature "
                             f"bins; got feature shape {shape}")
        policy = self.dtype_policy
        if self.feature_norm is not None:
            self.feature_normalization.build(shape)
        self.audio_encoder.build(shape)
        if not self.audio_encoder.projected:
            self.projection = keras.layers.Dense(
                self.dim, dtype=policy, name="projection")
            self.projection.build(
                self.audio_encoder.compute_output_shape(shape))
        self.output_dropout = keras.layers.Dropout(self.dropout,
                                                   dtype=policy)
        self.built = True

    # -- calling ------------------------------------------------------------

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(
                "AudioTower does not take a mask; crop/pad clips to a fixed "
                "length and mark a missing clip with the fusion presence "
                "mask instead")
        x = self.compute_features(inputs)
        x = ops.cast(x, self.compute_dtype)
        if self.feature_norm is not None:
            x = self.feature_normalization(x, training=training)
        x = self.audio_encoder(x, training=training)
        if not self.audio_encoder.projected:
            x = self.projection(x)
        x = self.output_dropout(x, training=training)
        if self.output_mode == "vector":
            return self.audio_encoder.pool(x)
        return x

    def load_own_variables(self, store):
        # A file saved before the encoder registry: the encoder's
        # sublayers sat directly under the tower.
        if remap_legacy_encoder(store, "audio_encoder",
                                self.audio_encoder.legacy_path):
            return
        super().load_own_variables(store)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        batch, frames, _ = self._feature_shape(input_shape)
        if self.output_mode == "vector":
            return (batch, self.dim)
        return (batch, self.audio_encoder.steps(frames), self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": self.encoder,
            "output": self.output_mode,
            "dim": self.dim,
            "dropout": self.dropout,
            "frontend": self.frontend,
            "sample_rate": self.sample_rate,
            "frame_length": self.frame_length,
            "frame_step": self.frame_step,
            "fft_length": self.fft_length,
            "num_mel_bins": self.num_mel_bins,
            "lower_edge_hertz": self.lower_edge_hertz,
            "upper_edge_hertz": self.upper_edge_hertz,
            "log_offset": self.log_offset,
            "num_mfcc": self.num_mfcc,
            "feature_norm": self.feature_norm,
            "filters": config_value(self.filters),
            "kernel_size": self.kernel_size,
            "rnn_units": self.rnn_units,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
