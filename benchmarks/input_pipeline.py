"""Input pipeline throughput on AV-MNIST: keras_mm tf.data vs a Python loader.

Measures examples/second turning the AV-MNIST training manifest (PNG image +
WAV audio per row) into model-ready tensors with the same log-mel features:

- `pipeline`: `keras_mm.data.Pipeline` (rows batched, then per batch:
  read + decode each image in a `tf.map_fn`, the WAV files of the batch
  decoded at once, and the batched log-mel `transform`), first epoch, no
  cache: examples / seconds from creating the iterator to its last batch,
  which is what `fit` pays in every epoch (tf.data starts its threads and
  instantiates its functions there). Building the dataset (Python tracing
  of its functions, once per dataset) is timed apart and reported too, with
  the throughput it gives when counted in (`pipeline_eps_with_build`), and
  so is the throughput from the first batch on (`pipeline_steady_eps`).
  TensorFlow itself is warmed up on a few rows first, as the Python loader
  is; each pass on a freshly built dataset;
- `python`: a straightforward loader a user would write - Pillow + `wave`
  + NumPy FFT in a `keras.utils.PyDataset` with its default workers
  (one: `__getitem__` called in turn, as `fit` does);
- 5 rounds of one pass of each, interleaved; medians of the rounds, and
  `ratio` is the median of the rounds' paired ratios (the shared machine's
  speed drifts by tens of percent within a minute);
- `train`: training throughput of the AV-MNIST concat model
  (`keras_mm.build_model`) on in-memory tensors, to show whether training
  would be input-bound (`headroom = pipeline_eps / train_eps`).

Prints a markdown table, then on its last line:
`{"pipeline_eps", "python_eps", "ratio", "train_eps", "headroom"}`.
Targets on 2 CPU cores: ratio >= 3 and headroom >= 2.
"""

import pathlib
import statistics
import sys
import time
import wave

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # noqa: E402

BATCH = 64
PASSES = 5
LABELS = {"label": {"type": "classification", "num_classes": 10}}


def python_loader_class(keras, np, mel_matrix, audio_cfg):
    """The loader a user would write without keras_mm."""
    from PIL import Image

    n = int(audio_cfg["sample_rate"] * audio_cfg["duration"])
    frame, step = audio_cfg["frame_length"], audio_cfg["frame_step"]
    fft = 1 << (frame - 1).bit_length()
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)
              ).astype("float32")  # periodic Hann, as tf.signal.stft

    def log_mel(samples):
        count = 1 + (n - frame) // step
        idx = np.arange(frame)[None, :] + step * np.arange(count)[:, None]
        spectrum = np.abs(np.fft.rfft(samples[idx] * window, n=fft)) ** 2
        return np.log(spectrum.astype("float32") @ mel_matrix + 1e-6)

    class AvMnistLoader(keras.utils.PyDataset):
        def __init__(self, rows, root, **kwargs):
            super().__init__(**kwargs)
            self.rows, self.root = rows, root

        def __len__(self):
            return (len(self.rows) + BATCH - 1) // BATCH

        def __getitem__(self, i):
            images, audios, labels = [], [], []
            for row in self.rows[i * BATCH:(i + 1) * BATCH]:
                image = Image.open(self.root / row["image"]).convert("L")
                images.append(np.asarray(image, "float32")[..., None] / 255)
                with wave.open(str(self.root / row["audio"])) as w:
                    pcm = np.frombuffer(w.readframes(w.getnframes()),
                                        "<i2").astype("float32") / 32768
                samples = np.zeros(n, "float32")
                samples[:min(n, len(pcm))] = pcm[:n]
                audios.append(log_mel(samples))
                labels.append(int(row["label"]))
            return ({"image": np.stack(images), "audio": np.stack(audios)},
                    np.array(labels))

    return AvMnistLoader


def main():
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="training rows to read (default: all 8000; "
                             "1024 with --quick)")
    args = parser.parse_args()
    _common.require_av_mnist_sources(args, what="AV-MNIST's sources")
    _common.configure_tensorflow(args.threads)
    import csv

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_mm import build_model, compile_model
    from keras_mm.data import AudioPreprocessor, ImagePreprocessor, Pipeline
    from keras_mm.data.manifest import Manifest

    rows_wanted = args.rows or (1024 if args.quick else None)
    _common.print_header("Input pipeline throughput (AV-MNIST)", args)
    folder = _common.ensure_av_mnist(args.data, args.cache, "clean")
    manifest_path = folder / "train.csv"
    with open(manifest_path, newline="") as f:
        rows = list(csv.DictReader(f))[:rows_wanted]
    manifest = Manifest(rows, path=str(manifest_path))
    audio_cfg = dict(_common.AV_MNIST_AUDIO)
    pre = {"image": ImagePreprocessor("image", **_common.AV_MNIST_IMAGE),
           "audio": AudioPreprocessor("audio", **audio_cfg)}
    # The AV-MNIST manifests point at the FSDD files where they are.
    pipe = Pipeline(manifest, pre, labels=LABELS, allow_paths_outside=True)
    pipe.validate()  # the one-off bad-input check is not timed

    steady = []   # (examples after the first batch, seconds) per pass

    def one_pass(dataset):
        """(examples, seconds building the dataset, seconds from creating
        its iterator to its last batch)."""
        start = time.perf_counter()
        ds = dataset()
        built = time.perf_counter()
        count, last, first = 0, built, None
        for features, _ in ds:
            count += int(features["image"].shape[0])
            last = time.perf_counter()
            if first is None:
                first, first_count = last, count
        steady.append((count - first_count, last - first))
        return count, built - start, last - built

    def pipeline_dataset(p=pipe):
        return p.dataset(batch_size=BATCH, training=False,
                         deterministic=False)

    # Process warm-up (TensorFlow's first tf.data / tf.function use, Pillow
    # imports): one batch of each loader on the first rows. The timed
    # datasets below are built afresh: their graphs are traced again.
    warm = Pipeline(Manifest(rows[:BATCH], path=str(manifest_path)), pre,
                    labels=LABELS, allow_paths_outside=True)
    next(iter(pipeline_dataset(warm)))

    # The Python loader, same features.
    mel = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=audio_cfg["num_mel_bins"],
        num_spectrogram_bins=(1 << (audio_cfg["frame_length"] - 1)
                              .bit_length()) // 2 + 1,
        sample_rate=audio_cfg["sample_rate"], lower_edge_hertz=20.0,
        upper_edge_hertz=audio_cfg["sample_rate"] / 2).numpy()
    loader = python_loader_class(keras, np, mel, audio_cfg)(
        rows, pathlib.Path(folder))
    loader[0]  # warm-up

    def python_pass():
        start = time.perf_counter()
        count = 0
        for i in range(len(loader)):
            x, _ = loader[i]
            count += len(x["image"])
        return count / (time.perf_counter() - start)

    # PASSES rounds, each: 1. the keras_mm pipeline, first epoch, no cache,
    # on a freshly built dataset (traced again, nothing cached by tf.data;
    # the iterator's teardown is not counted), then 2. one pass of the
    # Python loader. The ratios are the medians of the rounds' paired
    # ratios: the machine's speed drifts, and both loaders of a round see
    # the same drift.
    pipeline_runs, python_runs = [], []
    for _ in range(PASSES):
        pipeline_runs.append(one_pass(pipeline_dataset))
        python_runs.append(python_pass())
    pipeline_eps = statistics.median(n / t for n, _, t in pipeline_runs)
    with_build_eps = statistics.median(n / (b + t)
                                       for n, b, t in pipeline_runs)
    build_seconds = statistics.median(b for _, b, _ in pipeline_runs)
    n0, b0, t0 = pipeline_runs[0]
    first_eps = n0 / (b0 + t0)
    python_eps = statistics.median(python_runs)
    steady_eps = statistics.median(n / t for n, t in steady)
    ratios = [n / t / p for (n, _, t), p in zip(pipeline_runs, python_runs)]
    ratios_with_build = [n / (b + t) / p for (n, b, t), p
                         in zip(pipeline_runs, python_runs)]
    ratio = statistics.median(ratios)
    ratio_with_build = statistics.median(ratios_with_build)

    # Same features from both (checked on the first batch).
    ours = next(iter(pipe.dataset(batch_size=BATCH)))[0]
    theirs = loader[0][0]
    feature_gap = float(np.abs(ours["audio"].numpy() - theirs["audio"]).max())
    image_gap = float(np.abs(ours["image"].numpy() - theirs["image"]).max())

    # 3. training throughput on in-memory tensors.
    spec = {"inputs": {
        "image": {"modality": "image", "shape": [28, 28, 1],
                  "tower": {"encoder": "cnn", "dim": 64}},
        "audio": {"modality": "audio",
                  "shape": list(ours["audio"].shape[1:]),
                  "tower": {"encoder": "cnn", "frontend": None, "dim": 64}}},
        "fusion": {"type": "concat"},
        "trunk": {"hidden_units": [100]},
        "heads": {"label": {"type": "classification", "num_classes": 10}}}
    model = build_model(spec)
    compile_model(model, optimizer="adam")
    n = 512 if args.quick else 2048
    x = {k: np.repeat(v.numpy(), n // BATCH, axis=0)
         for k, v in ours.items() if k in ("image", "audio")}
    x = _common.with_presence(model, x)
    y = {"label": np.zeros(n, "int64")}
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # warm-up
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    train_eps = n / (time.perf_counter() - start)

    headroom = pipeline_eps / train_eps
    print(_common.markdown_table(
        ["measure", "examples/s"],
        [["keras_mm tf.data pipeline, one epoch as `fit` iterates it (no "
          f"cache; median of {PASSES} rounds)", f"{pipeline_eps:.0f}"],
         ["the same, with building the dataset (tracing, "
          f"{build_seconds:.2f} s) counted in", f"{with_build_eps:.0f}"],
         ["the same, first pass (build included)", f"{first_eps:.0f}"],
         ["the same, from its first batch on (iterator start-up left out)",
          f"{steady_eps:.0f}"],
         [f"Python loader (PIL + wave + NumPy FFT, PyDataset; median of "
          f"{PASSES} rounds)",
          f"{python_eps:.0f}"],
         ["training, AV-MNIST concat model, in memory", f"{train_eps:.0f}"],
         ["ratio pipeline / python (target >= 3; median of the paired "
          "ratios, min-max)",
          f"{ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"],
         ["ratio with the dataset build counted in",
          f"{ratio_with_build:.2f} ({min(ratios_with_build):.2f}-"
          f"{max(ratios_with_build):.2f})"],
         ["headroom pipeline / training (target >= 2)", f"{headroom:.2f}"]]))
    print()
    print(f"rows: {len(rows)}; max |log-mel difference| between the two "
          f"loaders {feature_gap:.2e}, max |image difference| "
          f"{image_gap:.2e}")
    _common.emit_json({"pipeline_eps": pipeline_eps,
                       "python_eps": python_eps, "ratio": ratio,
                       "train_eps": train_eps, "headroom": headroom,
                       "pipeline_eps_with_build": with_build_eps,
                       "ratio_with_build": ratio_with_build,
                       "ratios": ratios,
                       "build_seconds": build_seconds,
                       "pipeline_first_pass_eps": first_eps,
                       "pipeline_steady_eps": steady_eps,
                       "rows": len(rows)})


if __name__ == "__main__":
    main()
