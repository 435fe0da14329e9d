"""Media files for the tests, written with independent tools (`wave`)."""

import io
import wave

import numpy as np


def wav_bytes(samples, rate=8000, sampwidth=2):
    """A PCM WAV written by `wave`: `samples` int array [N] (mono) or
    [N, channels], cast to the sample width's type."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[sampwidth]
        w.writeframes(samples.astype(dtype).tobytes())
    return buffer.getvalue()
