"""tf.data pipeline: manifests -> model-ready batches.

The data are written by independent tools (Pillow PNGs, `wave` WAVs, `csv`
sensor files); the pipeline's output is checked against values computed from
them with NumPy. `make_manifest` / `make_preprocessors` are shared with
test_tfrecords.py and test_bad_input.py.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mm.data.audio_preprocessor import AudioPreprocessor
from keras_mm.data.image_preprocessor import ImagePreprocessor
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import Pipeline
from keras_mm.data.pipeline import make_dataset
from keras_mm.data.sensor_preprocessor import SensorPreprocessor
from keras_mm.data.tabular_preprocessor import TabularPreprocessor
from keras_mm.data.text_preprocessor import TextPreprocessor
from keras_mm.errors import DataError
from keras_mm.ops import audio_features

CLASSES = ["cat", "dog", "bird"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat", "dog", "bird",
         "sat", "ran"]
CAPTIONS = ["a cat sat", "dog ran", "a bird"]
CAPTION_IDS = [[4, 5, 8], [6, 9], [4, 7]]
LABELS = {"label": {"type": "classification", "class_names": CLASSES},
          "score": {"type": "regression"}}
N = 10


# ------------------------------------------------------------ test data
def png_pixels(seed):
    return np.random.RandomState(seed).randint(0, 256, (8, 8, 3),
                                               dtype=np.uint8)


def write_png(path, seed):
    Image.fromarray(png_pixels(seed)).save(path)


def wav_samples(seed, n=800):
    rng = np.random.RandomState(seed)
    return (rng.uniform(-0.5, 0.5, n) * 32767).astype("<i2")


def write_wav(path, seed, rate=8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(wav_samples(seed).tobytes())


def sensor_values(seed):
    steps = 5 + seed % 3
    values = np.random.RandomState(seed).normal(size=(steps, 2))
    return np.array([[float(f"{v:.4f}") for v in row] for row in values])


def write_sensor(path, seed):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ax", "ay"])
        for row in sensor_values(seed):
            writer.writerow([f"{v:.4f}" for v in row])


def manifest_rows(n=N):
    return [{"image": f"files/img{i}.png", "audio": f"files/snd{i}.wav",
             "imu": f"files/imu{i}.csv", "caption": CAPTIONS[i % 3],
             "age": str(20 + i), "city": ["oslo", "rome"][i % 2],
             "label": CLASSES[i % 3], "score": f"{i / 4:.2f}"}
            for i in range(n)]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def make_manifest(folder, n=N, rows=None):
    """Writes files/ (PNG, WAV, CSV sensor) and train.csv under `folder`."""
    os.makedirs(os.path.join(folder, "files"), exist_ok=True)
    for i in range(n):
        write_png(os.path.join(folder, "files", f"img{i}.png"), i)
        write_wav(os.path.join(folder, "files", f"snd{i}.wav"), i)
        write_sensor(os.path.join(folder, "files", f"imu{i}.csv"), i)
    return write_csv(os.path.join(folder, "train.csv"),
                     rows or manifest_rows(n))


def make_preprocessors():
    return {
        "image": ImagePreprocessor("image", size=(8, 8), channels=3),
        "audio": AudioPreprocessor(
            "audio", sample_rate=8000, duration=0.1, features="log_mel",
            frame_length=64, frame_step=32, num_mel_bins=8,
            random_crop=False),
        # Some series are longer than 6 steps, cut on purpose: not reported
        # (truncate="allow"; the count is tested in test_ts_convert.py).
        "imu": SensorPreprocessor("imu", channels=2, length=6,
                                  source="csv", mean=[0.0, 0.0],
                                  std=[1.0, 1.0], truncate="allow"),
        "caption": TextPreprocessor("caption", max_len=6, vocab=VOCAB),
        "tab": TabularPreprocessor("tab", numeric=["age"],
                                   categorical=["city"], mean=[25.0],
                                   variance=[4.0],
                                   vocabularies=[["oslo", "rome"]]),
    }


def collect(dataset):
    """All batches concatenated: ({key: array}, {head: array})."""
    features, labels = {}, {}
    for f, lab in dataset:
        for k, v in f.items():
            features.setdefault(k, []).append(v.numpy())
        for k, v in lab.items():
            labels.setdefault(k, []).append(v.numpy())
    return ({k: np.concatenate(v) for k, v in features.items()},
            {k: np.concatenate(v) for k, v in labels.items()})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    make_manifest(str(folder))
    return folder


# --------------------------------------------------------------- manifest
def test_manifest_csv_and_jsonl_typing_and_paths(tmp_path):
    path = write_csv(tmp_path / "m.csv", [
        {"img": "a/x.png", "n": "3", "f": "1.5", "s": "hi", "e": "1"},
        {"img": "/abs/y.png", "n": "4", "f": "", "s": "7", "e": ""}])
    m = Manifest.read(path)
    assert m.column_types == {"img": "string", "n": "int", "f": "float",
                              "s": "string", "e": "float"}
    assert m.paths("img") == [str(tmp_path / "a" / "x.png"), "/abs/y.png"]
    assert m.column("n") == [3, 4]
    f = m.column("f")
    assert f[0] == 1.5 and np.isnan(f[1])
    assert m.line(1) == 3
    with pytest.raises(DataError, match=r"no column 'nope'.*img, n, f"):
        m.column("nope")

    lines = [{"frames": ["f/0.png", "f/1.png"], "y": 2},
             {"frames": [], "y": 1}]
    jpath = tmp_path / "sub" / "m.jsonl"
    jpath.parent.mkdir()
    jpath.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    m = Manifest.read(jpath)
    assert m.column_types == {"frames": "list", "y": "int"}
    assert m.paths("frames") == [[str(tmp_path / "sub" / "f" / "0.png"),
                                  str(tmp_path / "sub" / "f" / "1.png")], []]

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"bad.csv, row 2: has 1 fields"):
        Manifest.read(bad)
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=r"row 2: line 2 is not valid JSON"):
        Manifest.read(badj)


# --------------------------------------------------------------- pipeline
def test_batches_have_model_keys_shapes_dtypes_and_values(data_dir):
    pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                    labels=LABELS, presence_mask=True)
    ds = pipe.dataset(batch_size=4)
    f_spec, l_spec = ds.element_spec
    assert sorted(f_spec) == ["audio", "caption", "image", "imu", "imu_mask",
                              "presence", "tab_categorical", "tab_numeric"]
    assert sorted(l_spec) == ["label", "score"]
    features, labels = collect(ds)
    dtypes = {k: v.dtype.name for k, v in features.items()}
    assert dtypes == {"image": "float32", "audio": "float32",
                      "imu": "float32", "imu_mask": "bool",
                      "caption": "int32", "tab_numeric": "float32",
                      "tab_categorical": "int32", "presence": "float32"}
    assert features["image"].shape == (N, 8, 8, 3)
    assert features["audio"].shape == (N, 24, 8)
    assert features["presence"].shape == (N, 5)
    np.testing.assert_array_equal(features["presence"], 1.0)

    for i in range(N):
        expected = png_pixels(i).astype(np.float32) * np.float32(1 / 255)
        np.testing.assert_allclose(features["image"][i], expected, atol=1e-6)
        wave_ = wav_samples(i).astype(np.float32) / 32768.0
        mel = audio_features.log_mel_spectrogram(
            wave_[None], sample_rate=8000, frame_length=64, frame_step=32,
            num_mel_bins=8)[0]
        np.testing.assert_allclose(features["audio"][i], mel, atol=1e-5)
        series = sensor_values(i)[:6]           # start crop to length 6
        steps = len(series)
        np.testing.assert_allclose(features["imu"][i, :steps], series,
                                   atol=1e-6)
        np.testing.assert_array_equal(features["imu"][i, steps:], 0.0)
        np.testing.assert_array_equal(features["imu_mask"][i],
                                      np.arange(6) < steps)
        ids = CAPTION_IDS[i % 3]
        np.testing.assert_array_equal(features["caption"][i],
                                      ids + [0] * (6 - len(ids)))
        np.testing.assert_allclose(features["tab_numeric"][i],
                                   [(20 + i - 25) / 2.0], atol=1e-6)
        assert features["tab_categorical"][i, 0] == 1 + i % 2
    np.testing.assert_array_equal(labels["label"], [i % 3 for i in range(N)])
    assert labels["label"].dtype == np.int32
    np.testing.assert_allclose(labels["score"][:, 0],
                               [float(f"{i / 4:.2f}") for i in range(N)])
    assert pipe.report.clean and pipe.report.total == N


def test_every_label_type_is_encoded_exactly(tmp_path):
    rows = [{"caption": CAPTIONS[i % 3], "kind": CLASSES[i % 3],
             "spam": ["no", "yes"][i % 2], "tags": ["a|c", "", "b"][i % 3],
             "x": f"{i / 4:.2f}", "y": str(-i)} for i in range(7)]
    labels = {"kind": {"type": "classification", "class_names": CLASSES},
              "spam": {"type": "binary", "class_names": ["no", "yes"]},
              "tags": {"type": "multilabel", "label_names": ["a", "b", "c"]},
              "xy": {"type": "regression", "column": ["x", "y"]}}
    pipe = Pipeline(write_csv(tmp_path / "m.csv", rows),
                    {"caption": TextPreprocessor("caption", max_len=4,
                                                 vocab=VOCAB)},
                    labels=labels)
    got = collect(pipe.dataset(batch_size=3))[1]
    np.testing.assert_array_equal(got["kind"], [0, 1, 2, 0, 1, 2, 0])
    assert got["kind"].dtype == np.int32
    np.testing.assert_array_equal(got["spam"], [[i % 2] for i in range(7)])
    tags = {"a|c": [1, 0, 1], "": [0, 0, 0], "b": [0, 1, 0]}
    np.testing.assert_array_equal(
        got["tags"], [tags[r["tags"]] for r in rows])
    np.testing.assert_allclose(got["xy"], [[i / 4, -i] for i in range(7)])


def test_feature_selection_presence_order_and_no_labels(data_dir):
    pre = make_preprocessors()
    pipe = Pipeline(str(data_dir / "train.csv"),
                    {"caption": pre["caption"], "image": pre["image"]},
                    presence_mask=True, presence_order=["image", "caption"],
                    keep_present=True)
    spec = pipe.dataset(batch_size=4).element_spec
    assert isinstance(spec, dict)          # no labels: features only
    assert sorted(spec) == ["caption", "caption_present", "image",
                            "image_present", "presence"]
    pipe = Pipeline(str(data_dir / "train.csv"), {"image": pre["image"]},
                    input_names=["image"], labels=LABELS)
    assert sorted(pipe.dataset(batch_size=4).element_spec[0]) == ["image"]
    with pytest.raises(ValueError, match=r"key must be the preprocessor's"):
        Pipeline(str(data_dir / "train.csv"), {"img": pre["image"]})


def test_keras_model_trains_on_the_dataset(data_dir):
    pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                    labels=LABELS, presence_mask=True)
    ds = pipe.dataset(batch_size=4, shuffle=True, seed=0, training=True)
    spec = ds.element_spec[0]
    inputs = {k: keras.Input(shape=s.shape[1:], dtype=s.dtype.name, name=k)
              for k, s in spec.items()}
    parts = [keras.layers.Flatten()(keras.ops.cast(x, "float32"))
             for x in inputs.values()]
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()(parts))
    outputs = {"label": keras.layers.Dense(3, activation="softmax",
                                           name="label")(hidden),
               "score": keras.layers.Dense(1, name="score")(hidden)}
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss={"label": "sparse_categorical_crossentropy",
                                "score": "mse"})
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))


def test_deterministic_shuffle_is_reproducible(data_dir):
    path = str(data_dir / "train.csv")

    def epochs(seed, deterministic=True):
        ds = make_dataset(path, make_preprocessors(), batch_size=3,
                          labels=LABELS, shuffle=True, seed=seed,
                          deterministic=deterministic)
        return [collect(ds)[1]["score"][:, 0] for _ in range(2)]

    a, b = epochs(7), epochs(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])        # reshuffled each epoch
    assert not np.array_equal(a[0], epochs(8)[0])
    loose = epochs(7, deterministic=False)[0]
    np.testing.assert_array_equal(np.sort(loose), np.sort(a[0]))


def test_training_draws_are_seeded_per_example(data_dir):
    """Random crops are stateless functions of (seed, pass, example): the
    same whatever the batch size or thread timing; new on each pass."""
    path = str(data_dir / "train.csv")

    def pipe():
        pre = {"audio": AudioPreprocessor(
                   "audio", sample_rate=8000, duration=0.05,
                   features="waveform", random_crop=True),
               "image": ImagePreprocessor("image", size=(8, 8), channels=3,
                                          random_flip=True,
                                          random_brightness=0.2)}
        return Pipeline(path, pre)

    def audio(dataset):
        return np.concatenate([f["audio"].numpy() for f in dataset])

    def rows(array):        # order-free: one sorted row per example
        return array[np.lexsort(array.T[::-1])]

    one = pipe().dataset(batch_size=2, training=True, seed=5)
    first, second = audio(one), audio(one)
    other = audio(pipe().dataset(batch_size=5, training=True, seed=5))
    np.testing.assert_array_equal(first, other)       # batching
    # deterministic=False may hand the batches out in another order; each
    # example's crop is still the same.
    loose = audio(pipe().dataset(batch_size=5, training=True, seed=5,
                                 deterministic=False))
    np.testing.assert_array_equal(rows(first), rows(loose))   # threads
    assert not np.array_equal(first, second)           # a new pass
    assert not np.array_equal(first, audio(pipe().dataset(
        batch_size=2, training=True, seed=6)))
    # Each crop is a 400-sample window of the example's 800 samples.
    for i, window in enumerate(first):
        full = wav_samples(i).astype("float32") / 32768
        starts = [o for o in range(401)
                  if np.array_equal(full[o:o + 400], window)]
        assert starts, f"example {i}: not a window of its file"
    # Batch-level augmentation (flip, brightness): same seed, same batches.
    images = [np.concatenate([f["image"].numpy() for f in pipe().dataset(
        batch_size=3, training=True, seed=5)]) for _ in range(2)]
    np.testing.assert_array_equal(images[0], images[1])
    plain = np.concatenate([f["image"].numpy() for f in pipe().dataset(
        batch_size=3)])
    assert not np.array_equal(images[0], plain)


def test_cache_memory_and_file_give_identical_data(data_dir, tmp_path):
    pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                    labels=LABELS)
    plain = collect(pipe.dataset(batch_size=4))
    cache_path = str(tmp_path / "cache" / "c")
    os.makedirs(os.path.dirname(cache_path))
    for cache in ("memory", cache_path):
        ds = pipe.dataset(batch_size=4, cache=cache)
        for _ in range(2):       # first pass fills the cache, second reads
            got = collect(ds)
            for k in plain[0]:
                np.testing.assert_array_equal(got[0][k], plain[0][k])
            for k in plain[1]:
                np.testing.assert_array_equal(got[1][k], plain[1][k])
    assert any(name.startswith("c") and name.endswith(".index")
               for name in os.listdir(os.path.dirname(cache_path)))


def test_drop_remainder_gives_static_batch_dimension(data_dir):
    pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                    labels=LABELS, presence_mask=True)
    ds = pipe.dataset(batch_size=4, drop_remainder=True)
    features, labels = ds.element_spec
    assert all(s.shape[0] == 4 for s in features.values())
    assert all(s.shape[0] == 4 for s in labels.values())
    assert sum(1 for _ in ds) == 2
    assert pipe.dataset(batch_size=4).element_spec[0]["image"].shape[0] \
        is None


def test_input_context_shards_are_disjoint_and_complete(data_dir):
    pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                    labels=LABELS)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        scores = collect(pipe.dataset(batch_size=2, input_context=ctx))[1]
        seen.append(sorted(scores["score"][:, 0].tolist()))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [float(f"{i / 4:.2f}")
                                         for i in range(N)]


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from test_pipeline import LABELS, make_preprocessors
    from keras_mm.data.pipeline import make_distributed
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    dist = make_distributed(strategy, sys.argv[1], make_preprocessors(),
                            global_batch_size=4, labels=LABELS,
                            presence_mask=True)
    out = {"replicas": strategy.num_replicas_in_sync, "batches": []}
    for features, labels in dist:
        sizes = [int(t.shape[0]) for t in
                 strategy.experimental_local_results(features["image"])]
        scores = [t.numpy()[:, 0].tolist() for t in
                  strategy.experimental_local_results(labels["score"])]
        out["batches"].append({"sizes": sizes, "scores": scores})
    print("RESULT" + json.dumps(out))
""")


def test_mirrored_strategy_on_two_logical_cpus(data_dir, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(script), str(data_dir / "train.csv"),
         os.path.dirname(os.path.abspath(__file__))],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    out = json.loads(line[-1][len("RESULT"):])
    assert out["replicas"] == 2
    # 10 examples, global batch 4: per-replica batches of 2; the fifth
    # batch goes to replica 0 and replica 1 gets an empty one.
    assert [b["sizes"] for b in out["batches"]] == [[2, 2], [2, 2], [2, 0]]
    scores = sorted(s for b in out["batches"] for r in b["scores"]
                    for s in r)
    assert scores == [float(f"{i / 4:.2f}") for i in range(N)]


def test_tf_data_service_in_process(data_dir):
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(
        dispatcher_address=address))
    try:
        pipe = Pipeline(str(data_dir / "train.csv"), make_preprocessors(),
                        labels=LABELS, presence_mask=True)
        local = collect(pipe.dataset(batch_size=4))
        for mode in ("parallel_epochs", "distributed_epoch"):
            remote = collect(pipe.dataset(batch_size=4,
                                          service=dispatcher.target,
                                          service_mode=mode))
            order = np.argsort(remote[1]["score"][:, 0])
            np.testing.assert_array_equal(remote[1]["score"][order],
                                          local[1]["score"])
            for k in local[0]:
                np.testing.assert_array_equal(remote[0][k][order],
                                              local[0][k])
    finally:
        worker._stop()
        dispatcher._stop()
