"""Input data: per-modality preprocessors (tf.data and serving), files."""

from keras_mm.data.audio_preprocessor import AudioPreprocessor
from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.data.base_preprocessor import deserialize_preprocessor
from keras_mm.data.base_preprocessor import serialize_preprocessor
from keras_mm.data.image_preprocessor import ImagePreprocessor
from keras_mm.data.sensor_files import decode_csv_bytes
from keras_mm.data.sensor_files import decode_npy_bytes
from keras_mm.data.sensor_files import read_ts
from keras_mm.data.sensor_preprocessor import SensorPreprocessor
from keras_mm.data.tabular_preprocessor import TabularPreprocessor
from keras_mm.data.text_preprocessor import TextPreprocessor
from keras_mm.data.video_preprocessor import VideoPreprocessor

__all__ = [
    "AudioPreprocessor",
    "ImagePreprocessor",
    "Preprocessor",
    "SensorPreprocessor",
    "TabularPreprocessor",
    "TextPreprocessor",
    "VideoPreprocessor",
    "decode_csv_bytes",
    "decode_npy_bytes",
    "deserialize_preprocessor",
    "read_ts",
    "serialize_preprocessor",
]

from keras_mm.data.bad_input import POLICIES, REASONS, BadInputReport
from keras_mm.data.inspection import inspect_source
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import Pipeline, make_dataset, make_distributed
from keras_mm.data.tfrecords import (convert_manifest_to_tfrecords,
                                     decode_example, encode_example,
                                     feature_spec, list_shards)

__all__ += [
    "BadInputReport", "Manifest", "POLICIES", "Pipeline", "REASONS",
    "convert_manifest_to_tfrecords", "decode_example", "encode_example",
    "feature_spec", "inspect_source", "list_shards", "make_dataset",
    "make_distributed",
]
