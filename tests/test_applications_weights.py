"""ImageTower(encoder="applications", weights="imagenet"): Keras's cache
folder first, one-line offline errors.

Every test points KERAS_HOME at a temporary folder and HTTPS_PROXY at a
closed local port, so that nothing is downloaded even where there is a
network: the "offline" case is the same everywhere.
"""

import os
import time

import h5py
import keras
import numpy as np
import pytest

from keras_mm.towers import ImageTower
from keras_mm.towers.imagenet_weights import (IMAGENET_WEIGHTS,
                                              keras_cache_folder)

IMAGES32 = np.random.default_rng(5).uniform(
    -1, 1, (2, 32, 32, 3)).astype("float32")
CLOSED_PORT_PROXY = "http://127.0.0.1:9"      # discard port: refused


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, CLOSED_PORT_PROXY)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return home


def write_keras_h5(model, path):
    """The h5 weights format of keras.applications' files (Keras 2's
    `save_weights(".h5")`: `layer_names` + one group per layer), which
    `Model.load_weights` reads by layer order. Keras 3's `save_weights`
    only writes `.weights.h5`, so this uses Keras's own legacy writer."""
    from keras.src.legacy.saving import legacy_h5_format
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def mobilenet(include_top=False, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV3Small(
        include_top=include_top, weights=None, input_shape=(32, 32, 3),
        include_preprocessing=False)


def test_file_names_are_the_ones_keras_applications_ask_for(offline_home):
    # Keras's own application, offline: the download it tries names the
    # URL (or, where the file is already in Keras's cache, it loads it).
    import keras.src.backend.config as config
    builders = {
        "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(
            include_top=False, weights="imagenet", input_shape=(32, 32, 3),
            include_preprocessing=False),
        "efficientnet_b0": lambda: keras.applications.EfficientNetB0(
            include_top=False, weights="imagenet", input_shape=(32, 32, 3)),
    }
    for backbone, build in builders.items():
        _, fname, base, _ = IMAGENET_WEIGHTS[backbone]
        try:
            build()
        except Exception as error:          # URL fetch failure on <origin>
            assert f"URL fetch failure on {base}{fname}:" in str(error)
        else:
            assert os.path.exists(os.path.join(config.keras_home(),
                                               "models", fname))
    # ResNet50 (94 MB of weights) by Keras's constants, not built here.
    from keras.src.applications import resnet
    assert IMAGENET_WEIGHTS["resnet50"][2] == resnet.BASE_WEIGHTS_PATH
    assert IMAGENET_WEIGHTS["resnet50"][3] == \
        resnet.WEIGHTS_HASHES["resnet50"][1]


@pytest.mark.parametrize("backbone", sorted(IMAGENET_WEIGHTS))
def test_absent_file_gives_one_line_naming_file_and_folder_fast(
        offline_home, backbone):
    folder = keras_cache_folder()
    assert folder == str(offline_home / "models")
    tower = ImageTower(encoder="applications", backbone=backbone,
                       weights="imagenet", dim=4)
    assert tower.get_config()["weights"] == "imagenet"
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        tower(IMAGES32)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    _, fname, base, _ = IMAGENET_WEIGHTS[backbone]
    assert "\n" not in message, message
    assert elapsed < 5.0, elapsed
    assert f"needs the file {fname}" in message
    assert f"copy it into {folder}/" in message
    assert "~/.keras/models" in message and "$KERAS_HOME" in message
    assert base + fname in message
    assert "no connection to the proxy 127.0.0.1:9" in message
    assert not (offline_home / "models" / fname).exists()


def test_cached_file_loads_offline_and_saved_model_needs_it_no_more(
        offline_home, tmp_path):
    source = mobilenet(seed=1)
    fname = IMAGENET_WEIGHTS["mobilenet_v3_small"][1]
    path = offline_home / "models" / fname
    write_keras_h5(source, path)
    keras.utils.set_random_seed(2)     # the tower's own init differs
    inputs = keras.Input((32, 32, 3))
    tower = ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                       weights="imagenet", dim=4, name="photo_tower")
    model = keras.Model(inputs, tower(inputs))
    got = tower.image_encoder.application.get_weights()
    want = source.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # The same features as the source application.
    np.testing.assert_allclose(
        tower.image_encoder.application(IMAGES32, training=False),
        source(IMAGES32, training=False), atol=1e-6, rtol=0)
    # A .keras file holds the weights: it reloads without the cache file.
    out = model(IMAGES32, training=False)
    saved = str(tmp_path / "m.keras")
    model.save(saved)
    path.unlink()
    loaded = keras.saving.load_model(saved)
    np.testing.assert_allclose(loaded(IMAGES32, training=False), out,
                               atol=1e-6, rtol=0)
    assert loaded.get_layer("photo_tower").get_config()["weights"] == \
        "imagenet"


def test_wrong_file_under_the_name_is_a_one_line_error(offline_home):
    # The classifier's weights (include_top=True) under the notop name.
    fname = IMAGENET_WEIGHTS["mobilenet_v3_small"][1]
    write_keras_h5(mobilenet(include_top=True), offline_home / "models" /
                   fname)
    tower = ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                       weights="imagenet", dim=4)
    with pytest.raises(ValueError) as info:
        tower(IMAGES32)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("ApplicationsImageEncoder: cannot load the "
                              "ImageNet weights "
                              f"file {offline_home / 'models' / fname}")
    assert "delete it" in message


@pytest.mark.parametrize("shape,what", [((32, 32, 1), r"\(32, 32, 1\)"),
                                        ((16, 16, 3), r"\(16, 16, 3\)")])
def test_imagenet_weights_need_3_channels_and_32_pixels(offline_home, shape,
                                                        what):
    tower = ImageTower(encoder="applications", backbone="efficientnet_b0",
                       weights="imagenet", dim=4)
    with pytest.raises(ValueError, match=r"weights='imagenet'\): the "
                       r"ImageNet weights take RGB images \(3 channels\) of "
                       r"at least 32x32; got images of shape " + what):
        tower(np.zeros((1, *shape), "float32"))


def test_weights_argument_errors():
    with pytest.raises(ValueError, match="must be None, 'imagenet'"):
        ImageTower(encoder="applications", backbone="resnet50", weights="")
    with pytest.raises(ValueError, match="needs a keras.applications "
                       "backbone"):
        ImageTower(encoder="cnn", weights="imagenet")
