"""`AudioTower`'s encoder architectures, one class per file, registered in
`keras_mm.registry.AUDIO_ENCODERS` under the name `AudioTower(encoder=...)`
takes."""

from keras_mm.towers.audio_encoder import AudioEncoder
from keras_mm.towers.audio_encoders.cnn_audio_encoder import CNNAudioEncoder
from keras_mm.towers.audio_encoders.crnn_audio_encoder import (
    CRNNAudioEncoder)
from keras_mm.towers.audio_encoders.transformer_audio_encoder import (
    TransformerAudioEncoder)

__all__ = ["AudioEncoder", "CNNAudioEncoder", "CRNNAudioEncoder",
           "TransformerAudioEncoder"]
