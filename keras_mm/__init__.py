"""keras_mm: multimodal models in Keras 3 on TensorFlow."""

from keras_mm.version import __version__  # noqa: F401
