"""The layer-argument validators of keras_mm.layers.utils, their wiring into
each layer package, and ImageTower's `encoder="applications"` rename."""

import json
import math
import re
import warnings

import numpy as np
import pytest

from keras_mm.fusion import (ConcatFusion, CrossAttentionFusion, FiLMFusion,
                             GatedFusion, JointTransformerFusion)
from keras_mm.heads import BinaryHead, ClassificationHead, RegressionHead
from keras_mm.layers import (PositionEmbedding, TemporalConvNet,
                             TransformerEncoder)
from keras_mm.layers.utils import (check_bool, check_choice, check_fraction,
                                   check_non_negative_float,
                                   check_non_negative_int,
                                   check_positive_float, check_positive_int,
                                   check_positive_ints, check_unique_strings)
from keras_mm.towers.audio_encoders import (CRNNAudioEncoder,
                                            TransformerAudioEncoder)
from keras_mm.towers.image_encoders import (ApplicationsImageEncoder,
                                            CNNImageEncoder, ViTImageEncoder)
from keras_mm.towers.sensor_encoders import GRUSensorEncoder
from keras_mm.towers.text_encoders import BiLSTMTextEncoder, CNNTextEncoder
from keras_mm.towers.video_encoders import Conv3DVideoEncoder
from keras_mm.towers import (AudioTower, ImageTower, SensorTower,
                             TabularTower, TextTower, VideoTower)
from keras_mm.towers.resnet_backbone import ResNetBackbone

# (validator, value, canonical result)
VALID = [
    (check_positive_int, 3, 3),
    (check_positive_int, np.int64(2), 2),
    (check_non_negative_int, 0, 0),
    (check_non_negative_int, np.int32(5), 5),
    (check_positive_ints, [1, 2], (1, 2)),
    (check_positive_ints, (), ()),
    (check_positive_ints, np.array([4, 8]), (4, 8)),
    (check_fraction, 0, 0.0),
    (check_fraction, 0.5, 0.5),
    (check_fraction, np.float32(0.25), 0.25),
    (check_positive_float, 1e-6, 1e-6),
    (check_non_negative_float, 0, 0.0),
    (check_bool, True, True),
    (check_bool, np.bool_(False), False),
    (check_unique_strings, ("image", "text"), ["image", "text"]),
]

# (validator, bad value, what the message says is allowed)
INVALID = [
    (check_positive_int, 0, "must be a positive integer"),
    (check_positive_int, -3, "must be a positive integer"),
    (check_positive_int, True, "must be a positive integer"),
    (check_positive_int, 2.5, "must be a positive integer"),
    (check_positive_int, 8.0, "must be a positive integer"),
    (check_positive_int, "8", "must be a positive integer"),
    (check_positive_int, None, "must be a positive integer"),
    (check_non_negative_int, -1, "must be an integer >= 0"),
    (check_non_negative_int, False, "must be an integer >= 0"),
    (check_non_negative_int, 1.5, "must be an integer >= 0"),
    (check_positive_ints, "32", "must be a list of positive integers"),
    (check_positive_ints, 32, "must be a list of positive integers"),
    (check_positive_ints, [4, 0], r"(entry 1 of [4, 0]) must be a positive"),
    (check_positive_ints, [True], r"(entry 0 of [True]) must be a positive"),
    (check_fraction, 1.0, "must be a number in [0, 1)"),
    (check_fraction, -0.1, "must be a number in [0, 1)"),
    (check_fraction, True, "must be a number in [0, 1)"),
    (check_fraction, "0.1", "must be a number in [0, 1)"),
    (check_fraction, None, "must be a number in [0, 1)"),
    (check_fraction, math.nan, "must be a number in [0, 1)"),
    (check_positive_float, 0, "must be a finite number > 0"),
    (check_positive_float, math.inf, "must be a finite number > 0"),
    (check_positive_float, "1e-6", "must be a finite number > 0"),
    (check_non_negative_float, -1.0, "must be a finite number >= 0"),
    (check_bool, 1, "must be True or False"),
    (check_bool, "yes", "must be True or False"),
    (check_bool, None, "must be True or False"),
    (check_unique_strings, "ab", "must be a list of strings"),
    (check_unique_strings, ["a", 1], "must be a list of strings"),
    (check_unique_strings, ["a", ""], "must be a list of strings"),
    (check_unique_strings, ["a", "b", "a"], "duplicate names ['a']"),
]


@pytest.mark.parametrize("check, value, expected", VALID)
def test_validator_accepts(check, value, expected):
    result = check("Owner", "arg", value)
    assert result == expected
    assert type(result) is type(expected)  # plain Python types (JSON-able)


@pytest.mark.parametrize("check, value, allowed", INVALID)
def test_validator_rejects(check, value, allowed):
    with pytest.raises(ValueError) as info:
        check("Owner", "arg", value)
    message = str(info.value)
    assert message.startswith("Owner: arg"), message
    if check not in (check_positive_ints, check_unique_strings):
        assert message.startswith(f"Owner: arg={value!r} "), message
    assert allowed in message, message


def test_allow_none_and_choice():
    assert check_positive_int("O", "a", None, allow_none=True) is None
    assert check_positive_float("O", "a", None, allow_none=True) is None
    assert check_unique_strings("O", "a", None, allow_none=True) is None
    with pytest.raises(ValueError, match=re.escape(
            "O: a=0 must be a positive integer (1, 2, ...) or None")):
        check_positive_int("O", "a", 0, allow_none=True)
    with pytest.raises(ValueError, match=re.escape(
            "O: a=[] must list at least 1 positive integer(s)")):
        check_positive_ints("O", "a", [], min_length=1)
    assert check_choice("O", "a", "x", ("x", "y")) == "x"
    with pytest.raises(ValueError, match="O: a='z' is not one of 'x', 'y'"):
        check_choice("O", "a", "z", ("x", "y"))


# One bad argument per layer (at least one per layer package): the layer's
# own ValueError names the class and the argument.
WIRED = [
    # towers
    (lambda: SensorTower(dim=0), "SensorTower: dim=0"),
    (lambda: SensorTower(encoder="transformer", intermediate_dim=0),
     "TransformerSensorEncoder: intermediate_dim"),
    (lambda: TextTower(20, 8, dim=True), "TextTower: dim=True"),
    (lambda: TextTower(20, 8, encoder="transformer", num_heads=True),
     "TransformerTextEncoder: num_heads=True"),
    (lambda: TabularTower(num_numeric=-1), "TabularTower: num_numeric=-1"),
    (lambda: TabularTower(num_numeric=2, hidden_units=(8, 0)),
     "TabularTower: hidden_units=0"),
    (lambda: ImageTower(dropout=1.0), "ImageTower: dropout=1.0"),
    (lambda: ImageTower(dim=8.5), "ImageTower: dim=8.5"),
    (lambda: AudioTower(frame_step=0), "AudioTower: frame_step=0"),
    (lambda: AudioTower(log_offset=0.0), "AudioTower: log_offset=0.0"),
    (lambda: VideoTower(filters=(8, 0)), "FramesVideoEncoder: filters=0"),
    (lambda: VideoTower(dim=0), "VideoTower: dim=0"),
    # encoders (built by the towers)
    (lambda: CNNImageEncoder(kernel_size=0), "CNNImageEncoder: kernel_size"),
    (lambda: ViTImageEncoder(patch_size=0), "ViTImageEncoder: patch_size"),
    (lambda: ApplicationsImageEncoder("vgg16"),
     "ApplicationsImageEncoder: backbone='vgg16'"),
    (lambda: CRNNAudioEncoder(rnn_units=0), "CRNNAudioEncoder: rnn_units"),
    (lambda: TransformerAudioEncoder(num_heads=0),
     "TransformerAudioEncoder: num_heads"),
    (lambda: CNNTextEncoder(filters=0), "CNNTextEncoder: filters=0"),
    (lambda: BiLSTMTextEncoder(num_layers=0),
     "BiLSTMTextEncoder: num_layers"),
    (lambda: GRUSensorEncoder(use_cudnn="yes"), "GRUSensorEncoder: use_cudnn"),
    (lambda: Conv3DVideoEncoder(kernel_size=0),
     "Conv3DVideoEncoder: kernel_size"),
    (lambda: VideoTower(temporal="tcn", tcn_dilations=()),
     "VideoTower: tcn_dilations must list"),
    (lambda: ResNetBackbone(base_filters=0), "ResNetBackbone: base_filters"),
    # fusion
    (lambda: GatedFusion(units=0), "GatedFusion: units=0"),
    (lambda: ConcatFusion(modalities=["a", "a"]),
     "ConcatFusion: modalities has duplicate names"),
    (lambda: CrossAttentionFusion(dropout=1.5),
     "CrossAttentionFusion: dropout=1.5"),
    (lambda: CrossAttentionFusion(num_layers=0),
     "CrossAttentionFusion: num_layers=0"),
    (lambda: JointTransformerFusion(use_positions="yes"),
     "JointTransformerFusion: use_positions='yes'"),
    (lambda: FiLMFusion(target="image", units=0), "FiLMFusion: units=0"),
    # heads
    (lambda: ClassificationHead(3, dropout=1.0),
     "ClassificationHead: dropout=1.0"),
    (lambda: ClassificationHead(0), "ClassificationHead: num_classes=0"),
    (lambda: BinaryHead(hidden_units=(8, 0)), "BinaryHead: hidden_units=0"),
    (lambda: RegressionHead(units=0), "RegressionHead: units=0"),
    # layers
    (lambda: TransformerEncoder(num_heads=0), "TransformerEncoder: num_heads"),
    (lambda: TemporalConvNet(dilations=()), "TemporalConvNet: dilations=[]"),
    (lambda: PositionEmbedding(sequence_length=0),
     "PositionEmbedding: sequence_length=0"),
]


@pytest.mark.parametrize("make, message", WIRED)
def test_layers_use_the_validators(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_numpy_arguments_give_json_configs():
    tower = SensorTower(dim=np.int64(8), dropout=np.float32(0.5),
                        tcn_dilations=np.array([1, 2]))
    config = tower.get_config()
    assert (config["dim"], config["tcn_dilations"]) == (8, [1, 2])
    json.dumps(config)


# -- ImageTower: encoder="applications" (formerly "resnet" + backbone) -------

IMAGES32 = np.random.RandomState(0).uniform(
    size=(2, 32, 32, 3)).astype("float32")


def test_image_tower_applications_encoder():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling does not warn
        tower = ImageTower(encoder="applications",
                           backbone="mobilenet_v3_small", dim=8)
    assert tower(IMAGES32).shape == (2, 8)
    assert tower.image_encoder.application.name.startswith("MobileNetV3Small")
    config = tower.get_config()
    assert (config["encoder"], config["backbone"]) == (
        "applications", "mobilenet_v3_small")


def test_image_tower_resnet_without_backbone_is_the_resnet_built_here():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tower = ImageTower(encoder="resnet", depth=18, base_filters=4, dim=8)
    assert tower(IMAGES32).shape == (2, 8)
    assert isinstance(tower.image_encoder, ResNetBackbone)
    assert not hasattr(tower, "application")


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_small",
                                      "efficientnet_b0"])
def test_image_tower_resnet_backbone_is_a_deprecated_alias(backbone):
    new = ImageTower(encoder="applications", backbone=backbone, dim=8,
                     name="tower")
    with pytest.warns(DeprecationWarning, match=re.escape(
            f"write encoder='applications', backbone={backbone!r}")):
        old = ImageTower(encoder="resnet", backbone=backbone, dim=8,
                         name="tower")
    assert old.encoder == "applications"
    assert old.get_config() == new.get_config()
    assert old.compute_output_shape((None, 64, 64, 3)) == (None, 8)
    # A config saved with the old spelling loads as the new one.
    legacy = dict(new.get_config(), encoder="resnet")
    with pytest.warns(DeprecationWarning):
        restored = ImageTower.from_config(legacy)
    assert restored.get_config() == new.get_config()


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder": "applications"},
     "encoder='applications' needs backbone= one of 'resnet50', "
     "'mobilenet_v3_small', 'efficientnet_b0'"),
    ({"encoder": "vit", "backbone": "resnet50"},
     "backbone='resnet50' needs encoder='applications'; got encoder='vit'"),
    ({"encoder": "applications", "backbone": "vgg16"},
     "backbone='vgg16' is not one of None, 'resnet50'"),
])
def test_image_tower_applications_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageTower(**kwargs)
