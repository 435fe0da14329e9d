"""Audio augmentation: each step against a NumPy reference of its drawn
values, seeded determinism, and evaluation / serving equal to no
augmentation bitwise."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from media_files import wav_bytes

from keras_mm.data import AudioPreprocessor
from keras_mm.data import Pipeline
from keras_mm.data import deserialize_preprocessor
from keras_mm.data import serialize_preprocessor
from keras_mm.data.audio_augmentation import AudioAugmentation
from keras_mm.data.audio_augmentation import content_length

RNG = np.random.default_rng(0)
ALL_ON = {"time_shift": 0.1, "gain_db": 6.0, "noise_snr": [5.0, 20.0],
          "time_masks": 2, "time_mask_width": 4, "freq_masks": 2,
          "freq_mask_width": 3}
NO_AUG = {"time_shift": 0.0, "gain_db": 0.0, "noise_snr": None,
          "time_masks": 0, "time_mask_width": 0, "freq_masks": 0,
          "freq_mask_width": 0}
SMALL = {"sample_rate": 8000, "duration": 0.1, "features": "log_mel",
         "frame_length": 128, "frame_step": 64, "num_mel_bins": 12}


def short_clips(lengths=(300, 500, 800, 1200)):
    """WAV bytes of clips with non-zero ends (a 0.1 s window is 800)."""
    clips = []
    for n in lengths:
        samples = RNG.integers(1000, 20000, n) * RNG.choice([-1, 1], n)
        clips.append(wav_bytes(samples))
    return clips


def padded_waves(lengths=(300, 500, 800), n=800):
    """`[B, n]` float32: clips of `lengths` non-zero samples, then zeros."""
    wave = np.zeros((len(lengths), n), np.float32)
    for i, length in enumerate(lengths):
        wave[i, :length] = RNG.uniform(0.1, 0.9, length) * RNG.choice(
            [-1, 1], length)
    return wave


def np_shift(row, shift):
    """NumPy reference: `row` moved right by `shift` (left if negative),
    zero-filled (np.roll without the wrap-around)."""
    out = np.roll(row, shift)
    if shift > 0:
        out[:shift] = 0
    elif shift < 0:
        out[shift:] = 0
    return out


# -- each step against NumPy -------------------------------------------------

def test_time_shift_places_clip_as_numpy_roll_and_pad():
    wave = padded_waves()
    aug = AudioAugmentation(time_shift=0.05)        # margin 40 samples
    assert content_length(tf.constant(wave)).numpy().tolist() == [300, 500,
                                                                  800]
    shifts = []
    for s in range(40):
        seed = tf.constant([3, s])
        draws = aug.draw_waveform(tf.constant(wave), seed)
        out = aug.augment_waveform(wave, seed).numpy()
        for i in range(len(wave)):
            shift = int(draws["shift"][i])
            np.testing.assert_array_equal(out[i], np_shift(wave[i], shift))
        shifts.append(draws["shift"].numpy())
    shifts = np.array(shifts)
    # Range [-40, 800 - L + 40]: a short clip lands anywhere in the window.
    for i, length in enumerate((300, 500, 800)):
        assert shifts[:, i].min() >= -40
        assert shifts[:, i].max() <= 800 - length + 40
    assert shifts[:, 0].max() > 200       # far past the 40-sample margin
    assert shifts[:, 2].min() < 0 < shifts[:, 2].max()


def test_gain_scales_by_the_drawn_factor():
    wave = padded_waves()
    aug = AudioAugmentation(gain_db=6.0)
    seed = tf.constant([1, 2])
    gains = aug.draw_waveform(tf.constant(wave), seed)["gain_db"].numpy()
    assert np.all(np.abs(gains) <= 6.0) and len(set(gains)) == 3
    np.testing.assert_allclose(aug.augment_waveform(wave, seed).numpy(),
                               wave * 10.0 ** (gains[:, None] / 20.0),
                               rtol=1e-6)


def np_noisy(wave, snr, noise):
    """NumPy reference: noise at `snr` dB over each row's recorded span
    (first to last non-zero sample); the zero padding stays zero."""
    out = wave.astype(np.float64).copy()
    for i, row in enumerate(wave):
        nonzero = np.flatnonzero(row)
        if not len(nonzero):
            continue
        first, last = nonzero[0], nonzero[-1] + 1
        power = np.mean(row[first:last].astype(np.float64) ** 2)
        out[i, first:last] += noise[i, first:last] * np.sqrt(
            power / 10 ** (snr[i] / 10))
    return out


def test_noise_has_the_drawn_snr_on_the_recorded_span():
    wave = padded_waves((1500, 2500, 4000), n=4000)
    wave[0, :200] = 0.0                     # leading silence: no noise
    aug = AudioAugmentation(noise_snr=[5.0, 20.0])
    seed = tf.constant([4, 5])
    draws = aug.draw_waveform(tf.constant(wave), seed)
    snr, noise = draws["snr_db"].numpy(), draws["noise"].numpy()
    assert np.all((snr >= 5.0) & (snr <= 20.0))
    out = aug.augment_waveform(wave, seed).numpy()
    np.testing.assert_allclose(out, np_noisy(wave, snr, noise), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(out[0, :200], 0.0)
    np.testing.assert_array_equal(out[1, 2500:], 0.0)
    for i, (first, last) in enumerate([(200, 1500), (0, 2500), (0, 4000)]):
        signal = np.mean(wave[i, first:last] ** 2)
        added = np.mean((out[i, first:last] - wave[i, first:last]) ** 2)
        np.testing.assert_allclose(10 * np.log10(signal / added), snr[i],
                                   atol=0.4)
    # A silent (absent) window gets no noise.
    silent = aug.augment_waveform(np.zeros((2, 100), np.float32), seed)
    np.testing.assert_array_equal(silent, 0.0)


def test_masks_set_the_drawn_bands_to_the_mean():
    features = RNG.normal(size=(3, 20, 12)).astype(np.float32)
    aug = AudioAugmentation(time_masks=2, time_mask_width=5, freq_masks=2,
                            freq_mask_width=4)
    seed = tf.constant([6, 7])
    draws = aug.draw_features(tf.constant(features), seed)
    out = aug.augment_features(features, seed).numpy()
    masked = np.zeros(features.shape, bool)
    for b in range(3):
        for start, width in zip(*(d[b].numpy() for d in draws["time"])):
            assert 0 <= width <= 5 and start + width <= 20
            masked[b, start:start + width, :] = True
        for start, width in zip(*(d[b].numpy() for d in draws["freq"])):
            assert 0 <= width <= 4 and start + width <= 12
            masked[b, :, start:start + width] = True
    # A masked value is its frame's mean over the bins.
    frame_mean = np.broadcast_to(features.mean(axis=2, keepdims=True),
                                 features.shape)
    expected = np.where(masked, frame_mean, features)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert masked.any() and not masked.all()
    # A silent frame (all bins equal, e.g. log(offset)) stays unchanged.
    silent = np.full((3, 20, 12), np.log(1e-6), np.float32)
    np.testing.assert_allclose(aug.augment_features(silent, seed), silent,
                               rtol=1e-6)


def test_waveform_steps_compose_shift_then_gain_then_noise():
    wave = padded_waves()
    aug = AudioAugmentation(time_shift=0.1, gain_db=6.0, noise_snr=[0, 10])
    seed = tf.constant([8, 9])
    d = {k: v.numpy() for k, v in
         aug.draw_waveform(tf.constant(wave), seed).items()}
    expected = np.stack([np_shift(w, s) for w, s in zip(wave, d["shift"])])
    expected = expected * 10.0 ** (d["gain_db"][:, None] / 20.0)
    expected = np_noisy(expected, d["snr_db"], d["noise"])
    np.testing.assert_allclose(aug.augment_waveform(wave, seed), expected,
                               rtol=1e-5, atol=1e-6)


def test_training_transform_is_waveform_steps_features_then_masks():
    pre = AudioPreprocessor("a", **SMALL, **ALL_ON)
    parsed = pre.parse_batch(tf.constant(short_clips()))
    seed = tf.constant([10, 11])
    out = pre.transform(parsed, training=True, seed=seed)["a"].numpy()
    wave = pre.augmentation.augment_waveform(parsed["a"], seed)
    features = pre.compute_features(wave, parsed["a_present"])
    expected = pre.augmentation.augment_features(features, seed)
    np.testing.assert_array_equal(out, expected)


# -- determinism, evaluation and serving -------------------------------------

def test_seeded_training_is_deterministic_and_changes_with_the_seed():
    pre = AudioPreprocessor("a", **SMALL, **ALL_ON)
    raw = tf.constant(short_clips())
    seeds = tf.constant([[1, i] for i in range(4)])

    def train(seed):
        parsed = pre.parse_batch(raw, training=True, seeds=seeds)
        return pre.transform(parsed, training=True,
                             seed=tf.constant(seed))["a"].numpy()

    first = train([5, 0])
    np.testing.assert_array_equal(first, train([5, 0]))
    other = train([5, 1])
    for i in range(4):                       # every example changes
        assert not np.array_equal(first[i], other[i])
    # The masks alone follow the seed too.
    masks = AudioPreprocessor("a", **SMALL, time_shift=0.0, gain_db=0.0,
                              time_masks=2, time_mask_width=4, freq_masks=2,
                              freq_mask_width=3)
    parsed = masks.parse_batch(raw)
    one, two = (masks.transform(parsed, training=True,
                                seed=tf.constant(s))["a"].numpy()
                for s in ([5, 0], [5, 1]))
    np.testing.assert_array_equal(one, masks.transform(
        parsed, training=True, seed=tf.constant([5, 0]))["a"])
    assert not np.array_equal(one, two)
    plain = AudioPreprocessor("a", **SMALL, **NO_AUG)
    unaugmented = plain.transform(plain.parse_batch(
        raw, training=True, seeds=seeds), training=True, seed=[5, 0])["a"]
    assert not np.array_equal(first, unaugmented)


def test_evaluation_and_serving_equal_no_augmentation_bitwise():
    raws = short_clips() + [b""]
    augmented = AudioPreprocessor("a", **SMALL, **ALL_ON)
    plain = AudioPreprocessor("a", **SMALL, **NO_AUG)
    expected = {k: v.numpy() for k, v in plain(tf.constant(raws)).items()}
    signature = [augmented.raw_signature()]
    serve = tf.function(lambda raw: augmented(raw), input_signature=signature)
    paths = {
        "eager": augmented(tf.constant(raws)),
        "serving": serve({"a": tf.constant(raws)}),
        "transform(training=False)": augmented.transform(
            augmented.parse_batch(tf.constant(raws)), training=False,
            seed=tf.constant([1, 2])),
    }
    for path, out in paths.items():
        for key in expected:
            np.testing.assert_array_equal(out[key], expected[key],
                                          err_msg=f"{path}: {key}")


def test_exported_serving_preprocess_equals_no_augmentation(tmp_path):
    import keras_mm
    from keras_mm.serving.serving_functions import ServingFunctions
    augmented = AudioPreprocessor("a", **SMALL, **ALL_ON)
    plain = AudioPreprocessor("a", **SMALL, **NO_AUG)
    model = keras_mm.build_model({
        "inputs": {"a": {"modality": "audio",
                         "shape": list(plain.output_shape()),
                         "tower": {"encoder": "cnn", "frontend": None,
                                   "dim": 4, "filters": [2]}}},
        "fusion": {"type": "concat"},
        "heads": {"y": {"type": "classification", "num_classes": 2}}})
    raw = {"a": tf.constant(short_clips())}
    outs = []
    for pre in (augmented, plain):
        functions = ServingFunctions(model, {"a": pre})
        fn = tf.function(functions.preprocess,
                         input_signature=[functions.raw_signature()])
        outs.append(fn(raw))
    np.testing.assert_array_equal(outs[0]["a"], outs[1]["a"])


def write_manifest(folder, lengths=(300, 500, 900, 400, 700, 200)):
    rows = []
    for i, raw in enumerate(short_clips(lengths)):
        (folder / f"c{i}.wav").write_bytes(raw)
        rows.append({"audio": f"c{i}.wav"})
    path = folder / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_pipeline_training_is_seeded_and_new_each_epoch(tmp_path):
    path = write_manifest(tmp_path)

    def pipe(**aug):
        return Pipeline(path, {"audio": AudioPreprocessor(
            "audio", **SMALL, **aug)})

    def epoch(dataset):
        return np.concatenate([f["audio"].numpy() for f in dataset])

    ds = pipe(**ALL_ON).dataset(batch_size=3, training=True, seed=5)
    first, second = epoch(ds), epoch(ds)
    np.testing.assert_array_equal(first, epoch(pipe(**ALL_ON).dataset(
        batch_size=3, training=True, seed=5)))      # same seed, same run
    assert not np.array_equal(first, second)        # new draws each epoch
    evaluation = epoch(pipe(**ALL_ON).dataset(batch_size=3))  # no aug.
    np.testing.assert_array_equal(evaluation, epoch(pipe(**NO_AUG).dataset(
        batch_size=3)))


# -- config, recipe, bad arguments -------------------------------------------

def test_config_round_trip_keeps_the_augmentation():
    pre = AudioPreprocessor("a", **SMALL, **ALL_ON)
    config = pre.get_config()
    assert {k: config[k] for k in ALL_ON} == ALL_ON
    clone = deserialize_preprocessor(serialize_preprocessor(pre))
    assert clone.get_config() == config
    parsed = pre.parse_batch(tf.constant(short_clips()))
    seed = tf.constant([1, 1])
    np.testing.assert_array_equal(
        pre.transform(parsed, training=True, seed=seed)["a"],
        clone.transform(parsed, training=True, seed=seed)["a"])


def test_recipe_preprocess_sets_the_augmentation(tmp_path):
    from keras_mm.errors import ConfigError
    from keras_mm.recipes import load_recipe
    recipe = tmp_path / "r.yaml"

    def write(preprocess):
        recipe.write_text(
            "name: r\n"
            "data: {splits: {train: train.csv}}\n"
            "inputs:\n"
            "  a:\n"
            "    modality: audio\n"
            f"    preprocess: {preprocess}\n"
            "    tower: {encoder: cnn, frontend: null}\n"
            "heads: {y: {type: classification, num_classes: 2}}\n")
        return load_recipe(str(recipe))

    spec = write("{sample_rate: 8000, features: log_mel, time_shift: 0.2, "
                 "noise_snr: [10, 30], time_masks: 1, time_mask_width: 4}")
    kwargs = spec["inputs"]["a"]["preprocess"]
    pre = AudioPreprocessor("a", **kwargs)
    assert (pre.time_shift, pre.noise_snr, pre.time_masks) == (
        0.2, [10.0, 30.0], 1)
    with pytest.raises(ConfigError, match=r"inputs\.a\.preprocess\.time_sh"
                                          r"ift.*must be a number in"):
        write("{features: log_mel, time_shift: 1.5}")
    with pytest.raises(ConfigError, match=r"inputs\.a\.preprocess\.gain: "
                                          r"unknown key.*gain_db"):
        write("{features: log_mel, gain: 3}")


@pytest.mark.parametrize("kwargs,match", [
    ({"time_shift": 1.0}, r"time_shift=1\.0 must be a number in \[0, 1\)"),
    ({"gain_db": -1}, r"gain_db=-1 must be a finite number >= 0"),
    ({"noise_snr": 10}, r"noise_snr=10 must be None or \[low, high\]"),
    ({"noise_snr": [30, 10]}, r"noise_snr=\[30, 10\] needs low <= high"),
    ({"time_masks": -1}, r"time_masks=-1 must be an integer >= 0"),
    ({"features": "waveform", "freq_masks": 1, "freq_mask_width": 2},
     r"time_masks/freq_masks mask features, but features='waveform'"),
])
def test_bad_augmentation_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AudioPreprocessor("a", **{**SMALL, **kwargs})
