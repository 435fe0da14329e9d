"""The image encoder registry: each `ImageEncoder` passes the layer battery,
`ImageTower` builds registered encoders (a user's own too), and weights
saved before the registry (encoder sublayers directly under the tower)
still load, with the outputs they had then."""

import numpy as np
import pytest
import keras
from keras import ops

from helpers import run_layer_checks
from legacy_fixtures import check_legacy_fixture
from keras_mm.registry import IMAGE_ENCODERS
from keras_mm.towers import ImageTower
from keras_mm.towers.image_encoder import ImageEncoder
from keras_mm.towers.image_encoders import (ApplicationsImageEncoder,
                                            CNNImageEncoder, ResNetBackbone,
                                            ViTImageEncoder)

RNG = np.random.RandomState(0)
IMAGES = RNG.uniform(size=(4, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("cls, kwargs, images, shape, fit", [
    (CNNImageEncoder, {"filters": (4, 8)}, IMAGES, (4, 4, 4, 8), True),
    (ViTImageEncoder, {"dim": 8, "patch_size": 4, "num_heads": 2,
                       "num_layers": 1}, IMAGES, (4, 17, 8), False),
    (ResNetBackbone, {"base_filters": 4}, IMAGES, (4, 1, 1, 32), False),
    (ApplicationsImageEncoder, {"backbone": "mobilenet_v3_small"},
     RNG.uniform(size=(2, 32, 32, 3)).astype("float32"), (2, 1, 1, 576),
     False),
])
def test_encoder_layer_checks(cls, kwargs, images, shape, fit, tmp_path):
    run_layer_checks(cls, kwargs, images, tmp_path=tmp_path,
                     expected_output_shape=shape, fit=fit)


def test_registry_names_every_encoder():
    assert IMAGE_ENCODERS.names() == ["applications", "cnn", "resnet", "vit"]
    with pytest.raises(ValueError, match="ImageTower: encoder='cnnn' is not "
                       "one of 'applications', 'cnn', 'resnet', 'vit'"):
        ImageTower(encoder="cnnn")


def test_tower_takes_only_its_encoders_arguments():
    # The cnn encoder checks filters; a vit tower does not use them.
    with pytest.raises(ValueError, match="CNNImageEncoder: filters must "
                       "list at least one"):
        ImageTower(encoder="cnn", filters=())
    tower = ImageTower(encoder="vit", patch_size=4, num_heads=2,
                       num_layers=1, dim=8, filters=())
    assert tower(IMAGES).shape == (4, 8)
    assert isinstance(tower.image_encoder, ViTImageEncoder)
    assert tower.image_encoder.dim == 8


@keras.saving.register_keras_serializable(package="keras_mm_tests")
class AveragePoolEncoder(ImageEncoder):
    """A user's architecture: 4x4 average pooling, then a 1x1 convolution."""

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(6, self.kernel_size, padding="same",
                                        dtype=self.dtype_policy, name="conv")
        self.conv.build(self.pooled_shape(input_shape))
        self.built = True

    def pooled_shape(self, input_shape):
        return (input_shape[0], *self.spatial(input_shape), input_shape[-1])

    def call(self, inputs, training=None):
        return self.conv(ops.average_pool(inputs, 4, 4, padding="valid"))

    def spatial(self, input_shape):
        return input_shape[1] // 4, input_shape[2] // 4

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.spatial(input_shape), 6)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@pytest.fixture
def test_average_pool():
    """Registers `AveragePoolEncoder` as `test_average_pool` (this test
    only)."""
    IMAGE_ENCODERS.register("test_average_pool")(AveragePoolEncoder)
    yield AveragePoolEncoder
    IMAGE_ENCODERS.unregister("test_average_pool")


@pytest.mark.parametrize("output, shape", [
    ("vector", (4, 5)), ("sequence", (4, 16, 5)),
    ("feature_map", (4, 4, 4, 5))])
def test_tower_builds_a_registered_encoder(output, shape, tmp_path,
                                           test_average_pool):
    kwargs = {"encoder": "test_average_pool", "dim": 5, "output": output,
              "kernel_size": 1}
    out = run_layer_checks(ImageTower, kwargs, IMAGES, tmp_path=tmp_path,
                           expected_output_shape=shape,
                           fit=output == "vector")
    tower = ImageTower(**kwargs)
    assert tower.image_encoder.kernel_size == 1  # the tower's argument
    tower.build(IMAGES.shape)
    # The tower is the encoder, the projection, then the output mode.
    features = tower.projection(tower.image_encoder(IMAGES))
    expected = {"vector": ops.mean(features, axis=(1, 2)),
                "sequence": ops.reshape(features, (4, 16, 5)),
                "feature_map": features}[output]
    np.testing.assert_allclose(tower(IMAGES), expected, atol=1e-6)
    assert out.shape == shape


def test_weights_saved_before_the_registry_load(tmp_path):
    """`legacy_towers.keras` was written by keras_mm at commit 3927240
    (`tests/fixtures/make_legacy_towers.py`): cnn, resnet and vit image
    towers and a frames video tower, after two training epochs (so the
    batch-norm statistics are not their initial values)."""
    check_legacy_fixture(
        "legacy_towers", ["image", "video"],
        old_paths=["layers/image_tower/convs", "layers/image_tower_1/resnet",
                   "layers/video_tower/frame_encoder/convs"],
        new_paths=["layers/image_tower/image_encoder/convs",
                   "layers/image_tower_1/image_encoder/convs1",
                   "layers/image_tower_2/image_encoder/vars",  # cls_token
                   "layers/video_tower/video_encoder/frame_encoder/"
                   "image_encoder/convs"],
        tmp_path=tmp_path)


def test_a_spec_names_a_registered_encoder(test_average_pool, tmp_path):
    import keras_mm
    model = keras_mm.build_model({
        "inputs": {
            "image": {"modality": "image", "shape": [16, 16, 3],
                      "tower": {"encoder": "test_average_pool",
                                "kernel_size": 1, "dim": 4}},
            "audio": {"modality": "audio", "shape": [12, 10],
                      "tower": {"encoder": "cnn", "frontend": None,
                                "filters": [4]}},
        },
        "fusion": {"type": "concat"},
        "heads": {"label": {"type": "classification", "num_classes": 3}},
    })
    tower = model.get_layer("image_tower")
    assert isinstance(tower.image_encoder, AveragePoolEncoder)
    assert tower.image_encoder.kernel_size == 1
    x = {"image": IMAGES, "audio": np.zeros((4, 12, 10), "float32"),
         "presence": np.ones((4, 2), bool)}
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(x, verbose=0)["label"],
        model.predict(x, verbose=0)["label"], atol=1e-6)
