"""Log-mel and MFCC features, in core `tf.signal` ops only.

This is the one implementation of audio features in keras_mm: the audio
tower's in-graph front end and the audio preprocessor both call it, so the
features seen in training and in serving are computed by the same code.
The ops (`RFFT`, `MatMul`, `Log`...) are XLA-compatible and run in stock
TF Serving.
"""

import tensorflow as tf


def frame_count(num_samples, frame_length, frame_step):
    """Frames produced by `log_mel_spectrogram` for `num_samples` samples.

    >>> frame_count(8000, frame_length=256, frame_step=128)
    61
    >>> frame_count(100, frame_length=256, frame_step=128)  # too short
    0
    """
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_step


def log_mel_spectrogram(waveform, sample_rate=8000, frame_length=256,
                        frame_step=128, fft_length=None, num_mel_bins=40,
                        lower_edge_hertz=20.0, upper_edge_hertz=None,
                        log_offset=1e-6):
    """Log-mel spectrogram of a batch of waveforms.

    Args:
        waveform: float `[..., samples]`.
        sample_rate: sampling rate in Hz.
        frame_length, frame_step, fft_length: STFT parameters in samples
            (`fft_length=None` is the next power of two >= frame_length).
        num_mel_bins: mel bands.
        lower_edge_hertz, upper_edge_hertz: mel filter bank range
            (`upper_edge_hertz=None` is the Nyquist frequency).
        log_offset: added before the log to avoid `log(0)`.

    Returns:
        float32 `[..., frames, num_mel_bins]`.

    Example:

    >>> wave = tf.random.normal((2, 8000))
    >>> features = log_mel_spectrogram(wave, sample_rate=8000,
    ...                                num_mel_bins=40)
    >>> tuple(features.shape), features.dtype.name
    ((2, 61, 40), 'float32')
    """
    waveform = tf.cast(waveform, tf.float32)
    if fft_length is None:
        fft_length = 1 << (int(frame_length) - 1).bit_length()
    if upper_edge_hertz is None:
        upper_edge_hertz = sample_rate / 2.0
    stft = tf.signal.stft(waveform, frame_length=frame_length,
                          frame_step=frame_step, fft_length=fft_length,
                          pad_end=False)
    # |z|^2 as re^2 + im^2: `abs` takes a square root that `square` undoes,
    # and costs a third of the whole feature map on CPU.
    power = tf.math.square(tf.math.real(stft)) + \
        tf.math.square(tf.math.imag(stft))
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=num_mel_bins,
        num_spectrogram_bins=fft_length // 2 + 1,
        sample_rate=sample_rate,
        lower_edge_hertz=lower_edge_hertz,
        upper_edge_hertz=upper_edge_hertz)
    mel = tf.tensordot(power, mel_matrix, axes=1)
    return tf.math.log(mel + log_offset)


def mfcc(log_mel, num_mfcc=13):
    """MFCCs from a log-mel spectrogram `[..., frames, bins]`.

    Returns the first `num_mfcc` coefficients, `[..., frames, num_mfcc]`
    (at most `bins` of them).

    >>> log_mel = log_mel_spectrogram(tf.zeros((2, 8000)), num_mel_bins=40)
    >>> tuple(mfcc(log_mel, num_mfcc=13).shape)
    (2, 61, 13)
    """
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :num_mfcc]
