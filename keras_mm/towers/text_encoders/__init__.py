"""`TextTower`'s encoder architectures, one class per file, registered in
`keras_mm.registry.TEXT_ENCODERS` under the name `TextTower(encoder=...)`
takes."""

from keras_mm.towers.text_encoder import TextEncoder
from keras_mm.towers.text_encoders.bag_text_encoder import BagTextEncoder
from keras_mm.towers.text_encoders.cnn_text_encoder import CNNTextEncoder
from keras_mm.towers.text_encoders.recurrent_text_encoder import (
    RecurrentTextEncoder)
from keras_mm.towers.text_encoders.bigru_text_encoder import BiGRUTextEncoder
from keras_mm.towers.text_encoders.bilstm_text_encoder import (
    BiLSTMTextEncoder)
from keras_mm.towers.text_encoders.transformer_text_encoder import (
    TransformerTextEncoder)

__all__ = ["BagTextEncoder", "BiGRUTextEncoder", "BiLSTMTextEncoder",
           "CNNTextEncoder", "RecurrentTextEncoder", "TextEncoder",
           "TransformerTextEncoder"]
