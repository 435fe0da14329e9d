"""Shared helpers of the benchmark scripts (not a public API).

- `parse_args`: the flags every script takes (`--data`, `--cache`,
  `--quick`, `--seeds`, `--epochs`, `--threads`) plus script-specific ones.
- `require_data`: prints a clear message and exits 0 when a data folder is
  absent (the scripts must not fail where `../shared/data` is not there).
- `machine_info`, `Timer`, `mean_std`, `markdown_table`, `emit_json`: the
  report (a markdown table, then ONE JSON object on the last line).

The scripts import `keras_mm` from the repository (this file's parent
folder) when it is not installed.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def default_data_dir():
    """`$KERAS_MM_SHARED_DATA`, else `../shared/data` next to the repo."""
    env = os.environ.get("KERAS_MM_SHARED_DATA")
    if env:
        return pathlib.Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def default_cache_dir():
    """`$KERAS_MM_CACHE/benchmarks`, else `~/.cache/keras_mm/benchmarks`."""
    env = os.environ.get("KERAS_MM_CACHE")
    base = pathlib.Path(env) if env else (
        pathlib.Path.home() / ".cache" / "keras_mm")
    return base / "benchmarks"


def make_parser(description):
    """An ArgumentParser with the flags common to all benchmark scripts."""
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=pathlib.Path, default=default_data_dir(),
                   help="the shared data folder (default: %(default)s; or "
                        "set KERAS_MM_SHARED_DATA)")
    p.add_argument("--cache", type=pathlib.Path, default=default_cache_dir(),
                   help="where built data sets and preprocessed arrays are "
                        "kept (default: %(default)s; or set KERAS_MM_CACHE)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (under 2 minutes): fewer seeds, epochs, "
                        "rows and model types")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra/inter-op threads (0: TF default)")
    return p


def add_worker_flags(parser, what="models"):
    """`--limit` and `--workers`, the flags of the scripts that train many
    small models side by side in worker processes."""
    parser.add_argument("--limit", type=int, default=None,
                        help="keep the first N rows of each split")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"{what} trained in parallel, each in its own "
                             "process with --threads threads (default: one "
                             "per core, at most 2, with 1 thread each)")


def apply_quick(args, quick, keys=("limit", "seeds", "epochs")):
    """Under `--quick`, each of `keys` left unset takes its `quick`
    value."""
    if args.quick:
        for key in keys:
            setattr(args, key, getattr(args, key) or quick[key])


def configure_tensorflow(threads=0):
    """Imports TensorFlow quietly and sets the thread pools."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def worker_plan(workers=None, threads=0):
    """(worker processes, TF threads per worker) for parallel trainings.

    Default: one worker per core, at most 2, each with 1 intra-op and 1
    inter-op thread. Small models do not keep 2 cores busy (TensorFlow's
    per-op work is too small to split), so two single-threaded trainings
    side by side get nearly twice the throughput of one two-thread one.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    if workers is None:
        workers = max(1, min(2, cores))
    if not threads and workers > 1:
        threads = 1
    return workers, threads


def run_tasks(function, tasks, workers, initializer, initargs):
    """Yields `function(task)` for each task, in `workers` spawned processes
    (or in this process with `workers=1`), in completion order."""
    if workers <= 1 or len(tasks) <= 1:
        initializer(*initargs)
        for task in tasks:
            yield function(task)
        return
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(tasks)), initializer=initializer,
                      initargs=initargs, maxtasksperchild=None) as pool:
        yield from pool.imap_unordered(function, tasks)


WORKER = {}    # a worker process's state, set by `init_worker`


def init_worker(args, threads, start, loader, extra=None):
    """A `run_tasks` initializer: TensorFlow threads, and `WORKER` holds
    the run's `args`, its `start` time, the `loader(args, variant)` of a
    variant's arrays (a module-level function: spawned workers pickle it)
    and the items of `extra`."""
    configure_tensorflow(threads)
    WORKER.clear()
    WORKER.update(args=args, start=start, loader=loader, arrays={},
                  **(extra or {}))


def worker_arrays(variant):
    """The arrays of `variant`, loaded once per worker process."""
    if variant not in WORKER["arrays"]:
        WORKER["arrays"][variant] = WORKER["loader"](WORKER["args"], variant)
    return WORKER["arrays"][variant]


def require_data(*paths, what="the benchmark data"):
    """Exits 0 with a clear message when any of `paths` is absent."""
    missing = [str(p) for p in paths if not pathlib.Path(p).exists()]
    if missing:
        print(f"SKIPPED: {what} is absent ({', '.join(missing)} not found). "
              "Pass --data DIR (the folder holding fsdd/, mnist/, "
              "basicmotions/) or set KERAS_MM_SHARED_DATA; nothing was run.")
        sys.exit(0)


def require_av_mnist_sources(args, what="AV-MNIST's source data"):
    """`require_data` of MNIST and FSDD under `args.data` (what AV-MNIST
    and the three-digits set are built from)."""
    require_data(args.data / "mnist", args.data / "fsdd",
                 what=f"{what} (MNIST + FSDD)")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    """Cores, CPU model, Python / TF / Keras versions, load average."""
    import keras
    import tensorflow as tf
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {"cores": cores, "cpu": cpu_model(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "load_avg_at_start": load}


def print_header(title, args, extra=None):
    info = machine_info()
    print(f"# {title}")
    print()
    print(f"- machine: {info['cores']} cores, {info['cpu']}; load average "
          f"at start {info['load_avg_at_start']}")
    print(f"- software: Python {info['python']}, TensorFlow "
          f"{info['tensorflow']}, Keras {info['keras']}")
    print(f"- command: python {' '.join([sys.argv[0]] + sys.argv[1:])}")
    print(f"- data: {args.data}; cache: {args.cache}"
          + ("; QUICK smoke run (figures not meaningful)" if args.quick
             else ""))
    for line in extra or ():
        print(f"- {line}")
    print(flush=True)
    return info


class Timer:
    """`with Timer() as t: ...; t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = None
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def mean_std(values):
    """Mean and (population) standard deviation of a list of numbers."""
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return mean, math.sqrt(var)


def pct(mean, std=None, digits=1):
    """`"97.3 ± 0.4"` from fractions."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{100 * mean:.{digits}f}"
    if std is not None:
        text += f" ± {100 * std:.{digits}f}"
    return text


def markdown_table(header, rows):
    """A GitHub markdown table (list of str rows)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def _round(value, digits=4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    return value


def percentile(values, q):
    """The `q`-th percentile (0-100) of `values`, linearly interpolated."""
    values = sorted(values)
    k = (len(values) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def time_calls(fn, items, warmup):
    """Milliseconds of `fn(item)` for each item, after `warmup` calls."""
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def emit_json(result):
    """Prints `result` as ONE JSON line (the script's last line)."""
    print(json.dumps(_round(result), sort_keys=False), flush=True)


def set_seed(seed):
    import keras
    keras.utils.set_random_seed(int(seed))


def count_params(model):
    return int(sum(int(math.prod(w.shape)) for w in model.trainable_weights))


def set_batchnorm_momentum(model, momentum):
    """Sets the momentum of every BatchNormalization layer in `model`."""
    import keras
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer()


def presence_order(model):
    """The modalities of `model`'s presence input (the default with two or
    more inputs), in its fusion's order; None for a model without one."""
    names = [t.name.split(":")[0] for t in model.inputs]
    if "presence" not in names:
        return None
    return list(model.get_layer("fusion").modalities)


def with_presence(model, x):
    """`x` plus a `presence` column of ones (every modality present) when
    the model has a presence input and `x` has none."""
    import numpy as np
    order = presence_order(model)
    if order is None or "presence" in x:
        return x
    n = len(next(iter(x.values())))
    return dict(x, presence=np.ones((n, len(order)), "float32"))


def presence_kwargs(model):
    """The `Pipeline` arguments that feed `model`'s presence input; {} for
    a model without one."""
    order = presence_order(model)
    return {} if order is None else {"presence_mask": True,
                                     "presence_order": order}


def reset_optimizer(optimizer):
    """Zeroes the step counter and slot variables (not the learning rate)."""
    for variable in optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(variable.numpy() * 0)


class SeedRunner:
    """Trains one model type from several seeds, tracing its graph once.

    `build()` returns `(compiled model, input names)`; it is called after
    `keras.utils.set_random_seed(seed)` for every seed, so each seed's
    initial weights are that seed's own. To pay Keras' graph tracing once
    per model type rather than once per seed, the first compiled model is
    kept while `key` (shapes, schedule length) is unchanged: a later seed's
    initial weights (batch norm statistics included) are copied into it and
    its optimizer state (step counter, moments) is zeroed - the starting
    point of a freshly compiled model.
    """

    def __init__(self, build):
        self.build = build
        self.model = None
        self.key = None

    def run(self, seed, key, train, test, label, epochs, batch_size):
        """Trains from `seed` on dicts of arrays; returns (test accuracy,
        epoch wall times, trainable parameter count)."""
        import numpy as np
        set_seed(seed)
        model, inputs = self.build()
        if self.model is None or self.key != key:
            self.model, self.inputs, self.key = model, inputs, key
        else:
            self.model.set_weights(model.get_weights())
            reset_optimizer(self.model.optimizer)
        timer = _epoch_timer()
        def features(split):
            # The data's arrays of the model's inputs (and, for a model
            # with a presence input, every modality present).
            return with_presence(self.model, {k: split[k] for k in
                                              self.inputs if k in split})

        self.model.fit(features(train), {"label": train[label]},
                       batch_size=batch_size, epochs=epochs, shuffle=True,
                       verbose=0, callbacks=[timer])
        probs = self.model.predict(features(test), batch_size=500,
                                   verbose=0)["label"]
        accuracy = float(np.mean(np.argmax(probs, -1) == test[label]))
        return accuracy, list(timer.times), count_params(self.model)

    def run_seeds(self, seeds, key, train, test, label, epochs, batch_size,
                  describe):
        """`run` for each seed; `{"mean", "std", "runs", "seconds_per_epoch"
        (median), "params"}`. `describe(seed, accuracy, epoch_times)` is the
        progress line printed to stderr after each seed."""
        import statistics
        import sys
        accs, times, params = [], [], None
        for seed in seeds:
            acc, epoch_times, params = self.run(seed, key, train, test,
                                                label, epochs, batch_size)
            accs.append(acc)
            times += epoch_times
            print(describe(seed, acc, epoch_times), file=sys.stderr,
                  flush=True)
        mean, std = mean_std(accs)
        return {"mean": mean, "std": std, "runs": accs,
                "seconds_per_epoch": statistics.median(times),
                "params": params}


# -- AV-MNIST -----------------------------------------------------------------

#: Audio preprocessing of the AV-MNIST benchmarks: the first second of each
#: clip (the `degraded` variant keeps exactly that second), log-mel computed
#: once by the toolkit's AudioPreprocessor (`features="log_mel"`), so the
#: audio tower runs with `frontend=None` on cached spectrograms: 50 ms
#: windows every 20 ms (48 frames x 40 mel bands).
AV_MNIST_AUDIO = {"sample_rate": 8000, "duration": 1.0, "crop": "start",
                  "random_crop": False, "features": "log_mel",
                  "frame_length": 400, "frame_step": 160,
                  "num_mel_bins": 40}
AV_MNIST_IMAGE = {"size": (28, 28), "channels": 1}


def _config_tag(*configs):
    import hashlib
    text = json.dumps([sorted(c.items()) for c in configs], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def ensure_av_mnist(data_dir, cache_dir, variant, limit=None):
    """Builds AV-MNIST `variant` into the cache (once); returns its folder."""
    from keras_mm.datasets import build_av_mnist
    name = f"av_mnist_{variant}" + (f"_limit{limit}" if limit else "")
    out = pathlib.Path(cache_dir) / name
    if not (out / "av_mnist.json").exists():
        build_av_mnist(pathlib.Path(data_dir) / "mnist",
                       pathlib.Path(data_dir) / "fsdd", out, variant=variant,
                       limit=limit, overwrite=True)
    return out


def prepare_av_mnist(args):
    """Builds and preprocesses each of `args.variants` into the cache once
    (before the worker processes read it), saying how long it took."""
    for variant in args.variants:
        arrays, prep = load_av_mnist(args.data, args.cache, variant,
                                     limit=args.limit)
        print(f"[{variant}] data ready ({len(arrays['train']['label'])} "
              f"train / {len(arrays['test']['label'])} test; built and "
              f"preprocessed in {prep:.1f} s)", file=sys.stderr, flush=True)


def load_av_mnist(data_dir, cache_dir, variant, limit=None,
                  audio=AV_MNIST_AUDIO, image=AV_MNIST_IMAGE,
                  batch_size=256):
    """AV-MNIST `variant` as in-memory arrays, preprocessed by keras_mm.

    The data set is built with `keras_mm.datasets.build_av_mnist` (into
    `cache_dir`), each split's manifest is read with
    `keras_mm.data.Manifest`, and every file goes through the toolkit's
    `ImagePreprocessor` / `AudioPreprocessor` (`parse` per example in
    tf.data, `transform` batched - the training path). The arrays are
    cached as an `.npz` keyed by the preprocessing config.

    Returns:
        (`{"train": {"image", "audio", "label"}, "test": {...}}`, seconds
        spent building and preprocessing (0 when cached)).
    """
    import numpy as np
    start = time.perf_counter()
    folder = ensure_av_mnist(data_dir, cache_dir, variant, limit)
    tag = _config_tag(audio, image)
    npz = folder / f"arrays_{tag}.npz"
    if npz.exists():
        with np.load(npz) as f:
            arrays = {split: {k: f[f"{split}/{k}"]
                              for k in ("image", "audio", "label")}
                      for split in ("train", "test")}
        return arrays, 0.0

    pre = av_mnist_preprocessors(audio, image)
    arrays = {}
    for split in ("train", "test"):
        parsed, labels = parsed_av_mnist_split(folder, split, pre,
                                               batch_size)
        arrays[split] = {name: transform_in_batches(pre[name], parsed[name],
                                                    batch_size)
                         for name in ("image", "audio")}
        arrays[split]["label"] = labels
    tmp = folder / f".arrays_{tag}.{os.getpid()}.npz"
    np.savez(tmp, **{f"{split}/{k}": v for split, d in arrays.items()
                     for k, v in d.items()})
    os.replace(tmp, npz)
    return arrays, time.perf_counter() - start



def av_mnist_preprocessors(audio=AV_MNIST_AUDIO, image=AV_MNIST_IMAGE):
    """`{"image": ImagePreprocessor, "audio": AudioPreprocessor}` of the
    AV-MNIST benchmarks."""
    from keras_mm.data import AudioPreprocessor, ImagePreprocessor
    return {"image": ImagePreprocessor("image", **image),
            "audio": AudioPreprocessor("audio", **audio)}


def parsed_av_mnist_split(folder, split, pre, batch_size=256):
    """One split's parsed values (`parse` per example in tf.data, the
    training path): `({"image": {key: array}, "audio": {...}}, labels)`."""
    import numpy as np
    import tensorflow as tf

    from keras_mm.data import Manifest
    manifest = Manifest.read(folder / f"{split}.csv")
    paths = {name: manifest.paths(name) for name in pre}
    labels = np.asarray(manifest.column("label", "int"), np.int32)

    def parse(row):
        return {name: p.parse(tf.io.read_file(row[name]))
                for name, p in pre.items()}

    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size))
    parts = {name: {} for name in pre}
    for batch in ds.as_numpy_iterator():
        for name, values in batch.items():
            for key, value in values.items():
                parts[name].setdefault(key, []).append(value)
    return ({name: {k: np.concatenate(v) for k, v in d.items()}
             for name, d in parts.items()}, labels)


def transform_in_batches(pre, parsed, batch_size=256):
    """`pre.transform` (evaluation mode) of parsed arrays, batch by batch:
    the model-ready array of `pre.name`."""
    import numpy as np
    n = len(next(iter(parsed.values())))
    return np.concatenate([
        np.asarray(pre.transform({k: v[i:i + batch_size]
                                  for k, v in parsed.items()})[pre.name])
        for i in range(0, n, batch_size)])


def parsed_av_mnist_test(data_dir, cache_dir, variant, limit=None):
    """The test split's parsed values and the preprocessors:
    `(parsed {"image": {...}, "audio": {...}}, preprocessors)`."""
    folder = ensure_av_mnist(data_dir, cache_dir, variant, limit)
    pre = av_mnist_preprocessors()
    return parsed_av_mnist_split(folder, "test", pre)[0], pre


# -- Three digits (MNIST + FSDD + generated photo) ----------------------------

#: Preprocessing of the three-digits benchmark: MNIST 28x28x1, the photo
#: 32x32x3, the audio as in AV-MNIST (first second, log-mel in the
#: preprocessor, so the audio tower runs with `frontend=None`).
THREE_DIGITS_IMAGES = {"mnist": {"size": (28, 28), "channels": 1},
                       "photo": {"size": (32, 32), "channels": 3}}
THREE_DIGITS_SPLITS = ("train", "val", "test")


def ensure_three_digits(data_dir, cache_dir, variant, limit=None):
    """Builds three-digits `variant` into the cache (once); its folder."""
    from keras_mm.datasets import build_three_digits
    name = f"three_digits_{variant}" + (f"_limit{limit}" if limit else "")
    out = pathlib.Path(cache_dir) / name
    if not (out / "three_digits.json").exists():
        build_three_digits(pathlib.Path(data_dir) / "mnist",
                           pathlib.Path(data_dir) / "fsdd", out,
                           variant=variant, limit=limit, overwrite=True)
    return out


def load_three_digits(data_dir, cache_dir, variant, limit=None,
                      audio=AV_MNIST_AUDIO, images=THREE_DIGITS_IMAGES,
                      batch_size=256, folder=None):
    """Three-digits `variant` as in-memory arrays, preprocessed by keras_mm.

    Built with `keras_mm.datasets.build_three_digits` into `cache_dir`
    (or read from an already built `folder`); each split's manifest goes
    through the toolkit's `ImagePreprocessor` (mnist, photo) and
    `AudioPreprocessor` (audio), the training path's `parse` + `transform`.
    Cached as an `.npz` keyed by the preprocessing config.

    Returns:
        `{split: {"mnist", "audio", "photo", "label"}}` for train, val, test.
    """
    import numpy as np
    folder = pathlib.Path(folder) if folder else ensure_three_digits(
        data_dir, cache_dir, variant, limit)
    keys = ("mnist", "audio", "photo", "label")
    tag = _config_tag(audio, *images.values())
    npz = folder / f"arrays_{tag}.npz"
    if npz.exists():
        with np.load(npz) as f:
            return {split: {k: f[f"{split}/{k}"] for k in keys}
                    for split in THREE_DIGITS_SPLITS}

    import tensorflow as tf

    from keras_mm.data import AudioPreprocessor, ImagePreprocessor, Manifest
    pres = {name: ImagePreprocessor(name, **cfg)
            for name, cfg in images.items()}
    pres["audio"] = AudioPreprocessor("audio", **audio)
    arrays = {}
    for split in THREE_DIGITS_SPLITS:
        manifest = Manifest.read(folder / f"{split}.csv")
        paths = {name: manifest.paths(name) for name in pres}

        def parse(row):
            out = {}
            for name, pre in pres.items():
                out.update(pre.parse(tf.io.read_file(row[name])))
            return out

        def transform(batch):
            out = {}
            for pre in pres.values():
                out.update(pre.transform(batch))
            return out

        ds = (tf.data.Dataset.from_tensor_slices(paths)
              .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
              .batch(batch_size).map(transform))
        parts = {name: [] for name in pres}
        for batch in ds.as_numpy_iterator():
            for name in parts:
                parts[name].append(batch[name])
        arrays[split] = {k: np.concatenate(v) for k, v in parts.items()}
        arrays[split]["label"] = np.asarray(
            manifest.column("label", "int"), np.int32)
    tmp = folder / f".arrays_{tag}.{os.getpid()}.npz"
    np.savez(tmp, **{f"{split}/{k}": v for split, d in arrays.items()
                     for k, v in d.items()})
    os.replace(tmp, npz)
    return arrays
