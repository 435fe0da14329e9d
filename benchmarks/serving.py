"""Serving latency and throughput: the exported SavedModel vs Keras.

An AV-MNIST model (image + audio, built from `../shared/data` by
`keras_mm.datasets.build_av_mnist` into the cache folder) is trained
briefly through the toolkit's pipeline and exported with `keras_mm.export`
(verified). Its raw-input signature `serving_default`, loaded with
`tf.saved_model.load`, takes the PNG bytes and WAV bytes of test examples
and does all the preprocessing in-graph. It is compared with what a user
would otherwise write around the Keras model: decode and normalize in
Python (Pillow for the image, `wave` + NumPy for the audio: mono, first
second, zero-padded), then:

- latency, batch 1: `model(x, training=False)` (calling `model.predict`
  per request costs tens of milliseconds of set-up, so it is no yardstick
  for latency);
- throughput, batch 64: `model.predict(x)` (the Keras batch API), and, for
  reference, `model(x, training=False)` as well.

Both sides start from the same bytes in memory and return NumPy
predictions; their predictions are checked to agree. The log-mel front end
is part of the model (`frontend="log_mel"` in the audio tower), so both
sides run exactly the same network.

Latency: p50 / p99 over single requests, after warm-up. Throughput:
examples per second over repeated batches of 64. The last line is one
JSON object: savedmodel_p50_ms, keras_p50_ms, latency_ratio (SavedModel /
Keras p50; target <= 0.25), savedmodel_eps_b64, keras_eps_b64,
throughput_ratio (SavedModel / `model.predict`; target >= 2).

Usage:
    python benchmarks/serving.py            # full (< 15 min, 2 cores)
    python benchmarks/serving.py --quick    # smoke run (< 2 min)
"""

import io
import json
import shutil
import statistics
import tempfile
import time
import wave

import _common

IMAGE = {"size": (28, 28), "channels": 1}
AUDIO = {"sample_rate": 8000, "duration": 1.0, "crop": "start",
         "random_crop": False, "features": "waveform"}
SPEC = {
    "name": "av_mnist_serving",
    "inputs": {
        "image": {"modality": "image", "shape": [28, 28, 1],
                  "tower": {"encoder": "cnn", "filters": [16, 32],
                            "dim": 64}},
        "audio": {"modality": "audio", "shape": [8000],
                  "tower": {"encoder": "cnn", "frontend": "log_mel",
                            "sample_rate": 8000, "frame_length": 256,
                            "frame_step": 128, "num_mel_bins": 40,
                            "filters": [16, 32], "dim": 64}}},
    "fusion": {"type": "concat"},
    "trunk": {"hidden_units": [64]},
    "heads": {"label": {"type": "classification", "num_classes": 10,
                        "class_names": [str(d) for d in range(10)]}},
}


def parse_args():
    p = _common.make_parser(__doc__)
    p.add_argument("--requests", type=int, default=None,
                   help="batch-1 requests timed per side (default 300, "
                        "quick 40)")
    p.add_argument("--batches", type=int, default=None,
                   help="batches of 64 timed per side (default 20, "
                        "quick 4)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default 2, quick 1)")
    p.add_argument("--limit", type=int, default=None,
                   help="AV-MNIST rows per split (default all; quick 256)")
    return p.parse_args()


# -- the Python preprocessing a user would write without the SavedModel -------

def python_image(data, size=IMAGE["size"]):
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image, np.float32)[:, :, None] * (1.0 / 255.0)


def python_audio(data, samples=8000, rate=8000):
    import numpy as np

    with wave.open(io.BytesIO(data)) as w:
        if w.getframerate() != rate or w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM at {rate} Hz")
        channels = w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    wave_ = pcm.reshape(-1, channels).astype(np.float32).mean(1) / 32768.0
    out = np.zeros(samples, np.float32)
    out[:min(samples, len(wave_))] = wave_[:samples]
    return out


def python_batch(images, audios):
    import numpy as np

    return {"image": np.stack([python_image(b) for b in images]),
            "audio": np.stack([python_audio(b) for b in audios])}


# -- measurements -------------------------------------------------------------

def main():
    args = parse_args()
    quick = args.quick
    data = args.data
    _common.require_data(data / "mnist", data / "fsdd",
                         what="the AV-MNIST source data (mnist/, fsdd/)")
    tf = _common.configure_tensorflow(args.threads)
    import keras
    import numpy as np

    import keras_mm
    from keras_mm.data import (AudioPreprocessor, ImagePreprocessor,
                               Manifest, Pipeline)
    from keras_mm.serving import export

    requests = args.requests or (40 if quick else 300)
    batches = args.batches or (4 if quick else 20)
    epochs = args.epochs or (1 if quick else 2)
    limit = args.limit or (256 if quick else None)
    rows_note = f" (first {limit} rows per split)" if limit else ""
    _common.print_header(
        "Serving: exported SavedModel vs Keras + Python preprocessing",
        args, [f"AV-MNIST clean{rows_note}; {epochs} training epoch(s); "
               f"{requests} batch-1 requests and {batches} batches of 64 "
               "per side"])
    _common.set_seed(0)

    # Data, training ------------------------------------------------------
    with _common.Timer() as t_data:
        folder = _common.ensure_av_mnist(data, args.cache, "clean", limit)
    pre = {"image": ImagePreprocessor("image", **IMAGE),
           "audio": AudioPreprocessor("audio", **AUDIO)}
    labels = {"label": SPEC["heads"]["label"]}
    model = keras_mm.build_model(SPEC)
    keras_mm.compile_model(model, optimizer=keras.optimizers.Adam(2e-3))
    with _common.Timer() as t_train:
        # The AV-MNIST manifests point at the FSDD files where they are.
        feed = dict(labels=labels, allow_paths_outside=True,
                    **_common.presence_kwargs(model))
        train = Pipeline(str(folder / "train.csv"), pre, **feed)
        test = Pipeline(str(folder / "test.csv"), pre, **feed)
        model.fit(train.dataset(64, training=True, shuffle=True, seed=0),
                  epochs=epochs, verbose=0, shuffle=False)
        scores = model.evaluate(test.dataset(256), verbose=0,
                                return_dict=True)
        accuracy = next(v for k, v in scores.items()
                        if k.endswith("accuracy"))

    # Raw test requests (bytes in memory) ---------------------------------
    manifest = Manifest.read(folder / "test.csv")
    image_paths = manifest.paths("image")
    audio_paths = manifest.paths("audio")
    size = max(requests, 64)
    images, audios = [], []
    for i in range(size):
        j = i % len(image_paths)
        with open(image_paths[j], "rb") as f:
            images.append(f.read())
        with open(audio_paths[j], "rb") as f:
            audios.append(f.read())

    # Export --------------------------------------------------------------
    base = tempfile.mkdtemp(prefix="serving_export_", dir=str(args.cache))
    try:
        with _common.Timer() as t_export:
            path = export(
                model, pre, "av_mnist", base_dir=base,
                golden_examples=[{"image": images[i], "audio": audios[i]}
                                 for i in range(4)])
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]

        def savedmodel(batch_images, batch_audios):
            out = serve(image=tf.constant(batch_images),
                        audio=tf.constant(batch_audios))
            return out["label_probabilities"].numpy()

        def keras_call(batch_images, batch_audios):
            x = _common.with_presence(model, python_batch(batch_images,
                                                          batch_audios))
            return keras.ops.convert_to_numpy(
                model(x, training=False)["label"])

        def keras_predict(batch_images, batch_audios):
            x = _common.with_presence(model, python_batch(batch_images,
                                                          batch_audios))
            return model.predict(x, batch_size=64, verbose=0)["label"]

        # Agreement on the benchmark examples.
        probs_sm = savedmodel(images[:64], audios[:64])
        probs_keras = keras_call(images[:64], audios[:64])
        max_diff = float(np.abs(probs_sm - probs_keras).max())
        agree = float((probs_sm.argmax(1) == probs_keras.argmax(1)).mean())

        # Latency, batch 1.
        singles = list(zip(images[:requests], audios[:requests]))
        warm = min(10, requests)
        sm_ms = _common.time_calls(lambda r: savedmodel([r[0]], [r[1]]), singles,
                           warm)
        keras_ms = _common.time_calls(lambda r: keras_call([r[0]], [r[1]]), singles,
                              warm)

        # Throughput, batch 64.
        blocks = [(images[:64], audios[:64])] * batches

        def eps(fn):
            fn(*blocks[0])
            start = time.perf_counter()
            for block in blocks:
                fn(*block)
            return 64 * len(blocks) / (time.perf_counter() - start)

        sm_eps = eps(savedmodel)
        predict_eps = eps(keras_predict)
        call_eps = eps(keras_call)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    result = {
        "savedmodel_p50_ms": statistics.median(sm_ms),
        "keras_p50_ms": statistics.median(keras_ms),
        "savedmodel_p99_ms": _common.percentile(sm_ms, 99),
        "keras_p99_ms": _common.percentile(keras_ms, 99),
        "savedmodel_eps_b64": sm_eps,
        "keras_eps_b64": predict_eps,
        "keras_call_eps_b64": call_eps,
    }
    result["latency_ratio"] = (result["savedmodel_p50_ms"]
                               / result["keras_p50_ms"])
    result["throughput_ratio"] = sm_eps / predict_eps

    rows = [
        ["SavedModel `serving_default` (raw PNG + WAV bytes)",
         f"{result['savedmodel_p50_ms']:.2f}",
         f"{result['savedmodel_p99_ms']:.2f}", f"{sm_eps:.0f}"],
        ["Keras `model(x)` + Pillow / wave / NumPy",
         f"{result['keras_p50_ms']:.2f}", f"{result['keras_p99_ms']:.2f}",
         f"{call_eps:.0f}"],
        ["Keras `model.predict(x)` + Pillow / wave / NumPy", "-", "-",
         f"{predict_eps:.0f}"],
    ]
    print(_common.markdown_table(
        ["path", "p50 ms (batch 1)", "p99 ms (batch 1)",
         "examples/s (batch 64)"], rows))
    print()
    print(f"- latency ratio (SavedModel p50 / Keras p50): "
          f"{result['latency_ratio']:.3f} (target <= 0.25)")
    print(f"- throughput ratio (SavedModel / model.predict, batch 64): "
          f"{result['throughput_ratio']:.2f} (target >= 2)")
    print(f"- predictions agree on {100 * agree:.1f}% of 64 examples "
          f"(max |p_savedmodel - p_keras| = {max_diff:.2e})")
    print(f"- test accuracy after {epochs} epoch(s): {100 * accuracy:.1f}%; "
          f"data {t_data.seconds:.0f} s, training {t_train.seconds:.0f} s, "
          f"export + verification {t_export.seconds:.0f} s")
    print(flush=True)
    payload = {
        "savedmodel_p50_ms": result["savedmodel_p50_ms"],
        "keras_p50_ms": result["keras_p50_ms"],
        "latency_ratio": result["latency_ratio"],
        "savedmodel_eps_b64": result["savedmodel_eps_b64"],
        "keras_eps_b64": result["keras_eps_b64"],
        "throughput_ratio": result["throughput_ratio"],
        "savedmodel_p99_ms": result["savedmodel_p99_ms"],
        "keras_p99_ms": result["keras_p99_ms"],
        "keras_call_eps_b64": call_eps,
        "test_accuracy": accuracy,
    }
    payload = {k: round(float(v), 4) for k, v in payload.items()}
    payload.update(max_abs_diff=float(f"{max_diff:.3g}"),
                   quick=bool(quick))
    print(json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()
