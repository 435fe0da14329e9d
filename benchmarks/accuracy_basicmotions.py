"""BasicMotions accuracy: accelerometer only, gyroscope only, and fused.

BasicMotions (UEA/UCR archive: 40 train + 40 test smart-watch recordings,
4 classes, 100 steps at 10 Hz) is built from `../shared/data/basicmotions`
by `keras_mm.datasets.build_basicmotions` into the cache folder: two sensor
inputs, `accelerometer` and `gyroscope` (3 channels each). Each goes through
the toolkit's `SensorPreprocessor` (`.npy` bytes parsed in tf.data, per-
channel mean/std fitted by `adapt` on the TRAIN split only, applied in
`transform`). Models come from `keras_mm.build_model` specs: one
`SensorTower` per input, then a fusion layer (or none, for the single-sensor
models), a trunk and a classification head. Every model is trained from 3
seeds; the table gives test accuracy mean ± std (40 test recordings: one
recording is 2.5 points) and training seconds per epoch (median epoch).

Published strong time-series classifiers reach about 100% on this set (see
the UEA multivariate archive's published results); the target here is >= 95%
for the best fused model.

The pooling study (`--study pooling`) chose `SensorTower(pooling=...)`'s
default: every encoder of `--encoders` x every pooling, fused by concat, on
the series as they are and on the same series cut to seeded random lengths
(`--min-length` to 100 steps, the rest padded and masked: unequal lengths as
users bring them); the sensor towers otherwise keep their defaults.

Usage:
    python benchmarks/accuracy_basicmotions.py           # full
    python benchmarks/accuracy_basicmotions.py --quick   # smoke run
    python benchmarks/accuracy_basicmotions.py --study pooling \
        --encoders gru lstm tcn --seeds 0 1 --epochs 40
"""

import math
import pathlib
import statistics
import sys
import time

import _common

INPUTS = ("accelerometer", "gyroscope")
UNIMODAL = {"accelerometer_only": "accelerometer",
            "gyroscope_only": "gyroscope"}
FUSION_TYPES = ("concat", "gated", "attention", "cross_attention")
SENSOR_TOWER = {"encoder": "tcn", "dim": 32, "kernel_size": 3,
                "tcn_dilations": [1, 2, 4, 8], "dropout": 0.1}
TRUNK = {"hidden_units": [32], "dropout": 0.2}
FUSION_OPTIONS = {"units": 32, "num_heads": 2, "num_layers": 1}
FUSION_DEFAULTS_KEPT = {"concat": ("units",)}
EPOCHS = 60
BATCH_SIZE = 8
LEARNING_RATE = 3e-3
LENGTH = 100

QUICK = {"seeds": [0], "epochs": 3, "fusions": ["concat", "attention"]}
POOLINGS = ("mean", "last", "attention", "max")


def load_basicmotions(data_dir, cache_dir):
    """Train/test arrays preprocessed by keras_mm's SensorPreprocessor.

    Returns ({"train": {input: [N, 100, 3], input + "_mask": [N, 100],
    "label": [N]}, "test": {...}}, class names).
    """
    import numpy as np
    import tensorflow as tf

    from keras_mm.data import Manifest, SensorPreprocessor
    from keras_mm.datasets import build_basicmotions
    folder = pathlib.Path(cache_dir) / "basicmotions"
    if not (folder / "basicmotions.json").exists():
        build_basicmotions(pathlib.Path(data_dir) / "basicmotions", folder,
                           overwrite=True)
    manifests = {split: Manifest.read(folder / f"{split}.csv")
                 for split in ("train", "test")}
    class_names = sorted(set(manifests["train"].column("label", "string")))
    arrays = {split: {} for split in manifests}
    for name in INPUTS:
        pre = SensorPreprocessor(name, channels=3, length=LENGTH,
                                 source="npy", random_crop=False)
        # Per-channel statistics from the training recordings only.
        pre.adapt(tf.data.Dataset.from_tensor_slices(
            manifests["train"].paths(name)).map(tf.io.read_file))
        for split, manifest in manifests.items():
            ds = (tf.data.Dataset.from_tensor_slices(manifest.paths(name))
                  .map(lambda p: pre.parse(tf.io.read_file(p)))
                  .batch(64).map(pre.transform))
            batches = list(ds.as_numpy_iterator())
            arrays[split][name] = np.concatenate([b[name] for b in batches])
            arrays[split][f"{name}_mask"] = np.concatenate(
                [b[f"{name}_mask"] for b in batches])
    for split, manifest in manifests.items():
        labels = manifest.column("label", "string")
        arrays[split]["label"] = np.asarray(
            [class_names.index(v) for v in labels], np.int32)
    return arrays, class_names


def cut_to_random_lengths(arrays, min_length, seed):
    """The same recordings cut to seeded random lengths in [min_length,
    LENGTH] (one length per recording, both sensors), padded and masked."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = {}
    for split, data in arrays.items():
        n = len(data["label"])
        lengths = rng.integers(min_length, LENGTH + 1, size=n)
        keep = np.arange(LENGTH)[None, :] < lengths[:, None]
        out[split] = dict(data)
        for name in INPUTS:
            out[split][name] = np.where(keep[:, :, None], data[name], 0.0)
            out[split][f"{name}_mask"] = keep & data[f"{name}_mask"]
    return out


def model_spec(name, num_classes, tower=None):
    from keras_mm.builder.spec import constructor_arguments, load_registries
    inputs = {n: {"modality": "sensor", "shape": [LENGTH, 3],
                  "tower": dict(SENSOR_TOWER if tower is None else tower)}
              for n in INPUTS}
    spec = {"name": f"basicmotions_{name}", "inputs": inputs,
            "trunk": dict(TRUNK),
            "heads": {"label": {"type": "classification",
                                "num_classes": num_classes}}}
    if name in UNIMODAL:
        spec["inputs"] = {UNIMODAL[name]: inputs[UNIMODAL[name]]}
        spec["fusion"] = None
        return spec
    _, fusions, _ = load_registries()
    fusion = {"type": name}
    if name in fusions:
        allowed = constructor_arguments(fusions.get(name))
        kept = FUSION_DEFAULTS_KEPT.get(name, ())
        fusion.update({k: v for k, v in FUSION_OPTIONS.items()
                       if k in allowed and k not in kept})
    spec["fusion"] = fusion
    return spec


def make_builder(name, num_classes, steps, args, tower=None):
    def build():
        import keras

        import keras_mm
        spec = model_spec(name, num_classes, tower)
        model = keras_mm.build_model(spec)
        lr = keras.optimizers.schedules.CosineDecay(args.lr, steps,
                                                    alpha=0.02)
        keras_mm.compile_model(model, optimizer=keras.optimizers.Adam(lr),
                               jit_compile=args.jit)
        # The series and their step masks (`mask: true` is the default).
        return model, tuple(t.name for t in model.inputs)

    return build


def pooling_study(args, arrays, class_names, wall):
    """Encoders x poolings x (equal, unequal lengths), concat fusion."""
    variants = {"equal": arrays,
                f"unequal {args.min_length}-{LENGTH}":
                    cut_to_random_lengths(arrays, args.min_length, seed=0)}
    steps = args.epochs * math.ceil(len(arrays["train"]["label"])
                                    / args.batch_size)
    rows, results = [], {}
    for encoder in args.encoders:
        for pooling in args.poolings:
            tower = {"encoder": encoder, "pooling": pooling}
            runner = _common.SeedRunner(make_builder(
                "concat", len(class_names), steps, args, tower))
            row = [encoder, pooling]
            for variant, data in variants.items():
                accs = []
                for seed in args.seeds:
                    acc, _, _ = runner.run(
                        seed, (variant, steps), data["train"], data["test"],
                        "label", args.epochs, args.batch_size)
                    accs.append(acc)
                    print(f"{encoder} {pooling} {variant} seed {seed}: "
                          f"{acc:.4f} ({time.perf_counter() - wall:.0f} s)",
                          file=sys.stderr, flush=True)
                mean, std = _common.mean_std(accs)
                results[f"{encoder}/{pooling}/{variant}"] = accs
                row.append(_common.pct(mean, std))
            rows.append(row)
    print(_common.markdown_table(["encoder", "pooling"] + [
        f"{v} test acc %" for v in variants], rows))
    _common.emit_json({"study": "pooling", "results": results,
                       "seeds": list(args.seeds), "epochs": args.epochs,
                       "wall_seconds": time.perf_counter() - wall})
    return 0


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {EPOCHS}")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help="peak Adam learning rate (cosine decay)")
    parser.add_argument("--fusions", nargs="+", default=None,
                        help=f"fusion types (default: "
                             f"{' '.join(FUSION_TYPES)})")
    parser.add_argument("--encoder", default=None,
                        help="SensorTower encoder (lstm, gru, tcn, "
                             f"transformer; default "
                             f"{SENSOR_TOWER['encoder']})")
    parser.add_argument("--jit", action="store_true",
                        help="jit_compile=True (XLA)")
    parser.add_argument("--study", choices=("pooling",),
                        help="run a study instead of the benchmark")
    parser.add_argument("--encoders", nargs="+",
                        default=["gru", "lstm", "tcn"],
                        help="pooling study: SensorTower encoders")
    parser.add_argument("--poolings", nargs="+", default=list(POOLINGS),
                        help="pooling study: SensorTower poolings")
    parser.add_argument("--min-length", type=int, default=20,
                        help="pooling study: shortest cut series")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds or QUICK["seeds"]
        args.epochs = args.epochs or QUICK["epochs"]
        args.fusions = args.fusions or QUICK["fusions"]
    args.seeds = args.seeds or [0, 1, 2]
    args.epochs = args.epochs or EPOCHS
    fusions = list(args.fusions or FUSION_TYPES)
    if args.encoder:
        SENSOR_TOWER["encoder"] = args.encoder
    _common.require_data(args.data / "basicmotions",
                         what="the BasicMotions data")
    wall = time.perf_counter()
    _common.configure_tensorflow(args.threads)
    _common.print_header(
        "BasicMotions test accuracy (keras_mm)", args,
        [f"seeds {args.seeds}; {args.epochs} epochs; batch "
         f"{args.batch_size}; Adam {args.lr:g} with cosine decay; "
         f"jit_compile={args.jit}",
         f"sensor towers {SENSOR_TOWER}; trunk {TRUNK}; fusion options "
         f"(where taken) {FUSION_OPTIONS}",
         "SensorPreprocessor(channels=3, length=100, source='npy'): "
         "per-channel normalization fitted on the train split only"])
    arrays, class_names = load_basicmotions(args.data, args.cache)
    if args.study == "pooling":
        return pooling_study(args, arrays, class_names, wall)
    train, test = arrays["train"], arrays["test"]
    print(f"data ready: {len(train['label'])} train / {len(test['label'])} "
          f"test, classes {class_names}", file=sys.stderr, flush=True)
    steps = args.epochs * math.ceil(len(train["label"]) / args.batch_size)

    models = list(UNIMODAL) + fusions
    results = {}
    for name in models:
        runner = _common.SeedRunner(make_builder(name, len(class_names),
                                                 steps, args))
        accs, times = [], []
        for seed in args.seeds:
            acc, epoch_times, params = runner.run(
                seed, steps, train, test, "label", args.epochs,
                args.batch_size)
            accs.append(acc)
            times += epoch_times
            print(f"{name} seed {seed}: accuracy {acc:.4f} (elapsed "
                  f"{time.perf_counter() - wall:.0f} s)", file=sys.stderr,
                  flush=True)
        mean, std = _common.mean_std(accs)
        results[name] = {"mean": mean, "std": std, "runs": accs,
                         "seconds_per_epoch": statistics.median(times),
                         "params": params}

    rows = [[name, _common.pct(r["mean"], r["std"]),
             " ".join(f"{100 * a:.1f}" for a in r["runs"]),
             f"{r['seconds_per_epoch']:.3f}", r["params"]]
            for name, r in results.items()]
    print(_common.markdown_table(
        ["model", "test acc % (mean ± std)", "per seed %", "s/epoch",
         "params"], rows))
    print()
    best_name = max(fusions, key=lambda f: results[f]["mean"])
    best = results[best_name]["mean"]
    elapsed = time.perf_counter() - wall
    print(f"- best fusion ({best_name}) {100 * best:.1f}% (target >= 95%): "
          f"{'met' if best >= 0.95 else 'MISSED'}")
    print(f"- wall time {elapsed:.0f} s")
    _common.emit_json({
        "accelerometer_only": results["accelerometer_only"]["mean"],
        "gyroscope_only": results["gyroscope_only"]["mean"],
        "fusion": {f: results[f]["mean"] for f in fusions},
        "best_fusion": best,
        "best_fusion_type": best_name,
        "std": {n: r["std"] for n, r in results.items()},
        "seconds_per_epoch": {n: r["seconds_per_epoch"]
                              for n, r in results.items()},
        "seeds": list(args.seeds), "epochs": args.epochs,
        "encoder": SENSOR_TOWER["encoder"], "quick": bool(args.quick),
        "wall_seconds": elapsed,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
