"""Missing and noisy modalities on degraded AV-MNIST, with and without
modality dropout.

Data: the `degraded` AV-MNIST variant (PCA-reduced images + noisy audio),
built from `../shared/data` and preprocessed by the toolkit's
`ImagePreprocessor` / `AudioPreprocessor` as in `accuracy_av_mnist.py`
(same towers, trunk, head, optimizer and epochs: its `fusion_spec`,
`unimodal_spec` and `make_builder` are imported, not copied; their
non-default settings are justified in that script's header).

Models, each from 3 seeds:
- `image_only`, `audio_only`: one input, no fusion;
- concat and FiLM fusion (presence mask on: the default with two inputs),
  trained without modality dropout and with `0.3` for each input: the
  training batches go through `keras_mm.data.modality_dropout` exactly as
  the pipeline applies `training.modality_dropout` (one stateless draw per
  example, never every modality dropped).

Each fused model is evaluated on the test split with every input, with
the image missing (its presence column 0) and with the audio missing, and
on noise curves: Gaussian pixel noise on the image and white noise at SNR
20 to -5 dB on the waveform (`keras_mm.evaluation.corruptions`, applied to
the parsed values before `transform`, as `keras-mm evaluate --robustness`
does).

Targets (with dropout): full-input accuracy within 0.5 points of the same
fusion without dropout (`full_drop_points`, the worse fusion); each
single-modality-missing accuracy within 1.5 points of the unimodal model of
the remaining modality (`missing_gap_points`, worst over modalities and
fusions). The figures without dropout are printed for contrast.

Usage:
    python benchmarks/robustness_av_mnist.py            # full
    python benchmarks/robustness_av_mnist.py --quick    # smoke run
"""

import math
import sys
import time

import _common
import accuracy_av_mnist as av

FUSIONS = ("concat", "film")
DROPOUT = 0.3
QUICK = {"limit": 2048, "seeds": [0], "epochs": 3}
MISSING = {"image": "audio_only", "audio": "image_only"}
LEVELS = 5


def train_dataset(train, inputs, rate, seed, batch_size):
    """Shuffled training batches; with `rate`, modality dropout on the
    `presence` column (one seeded draw per example, new each epoch)."""
    import numpy as np
    import tensorflow as tf

    from keras_mm.data.modality_dropout import (example_seeds,
                                                modality_keep_mask)
    n = len(train["label"])
    x = {k: train[k] for k in inputs}
    if len(inputs) > 1:
        x["presence"] = np.ones((n, len(inputs)), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, {"label": train["label"]}))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if not rate:
        return ds.batch(batch_size).prefetch(2)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True)))

    def drop(element, draws):
        features, labels = element
        features = dict(features)
        keep = modality_keep_mask(features["presence"],
                                  [rate] * len(inputs), example_seeds(draws))
        features["presence"] = features["presence"] * keep
        return features, labels

    return ds.batch(batch_size).map(drop).prefetch(2)


def accuracy(model, inputs, test, presence=None):
    import numpy as np
    x = {k: test[k] for k in inputs}
    if len(inputs) > 1:
        x["presence"] = np.tile(np.asarray(
            presence if presence is not None else [1.0] * len(inputs),
            "float32"), (len(test["label"]), 1))
    probs = model.predict(x, batch_size=500, verbose=0)["label"]
    return float(np.mean(np.argmax(probs, -1) == test["label"]))


def noisy_tests(args, test):
    """`{modality: [(level, test arrays with that modality corrupted)]}`,
    from the parsed test values through the toolkit's corruptions."""
    import numpy as np

    from keras_mm.evaluation import corruptions
    parsed, pre = _common.parsed_av_mnist_test(args.data, args.cache,
                                               "degraded", limit=args.limit)
    out = {}
    for name in ("image", "audio"):
        out[name] = []
        for level in range(LEVELS + 1):
            noisy = dict(test)
            values = {k: np.asarray(v) for k, v in corruptions.corrupt_parsed(
                pre[name], parsed[name], level, LEVELS,
                seed=args.noise_seed).items()}
            noisy[name] = _common.transform_in_batches(pre[name], values)
            severity = corruptions.severity(name, level, LEVELS)
            out[name].append((next(iter(severity.values())), noisy))
    return out


def run(args, name, inputs, rate, seed, steps, audio_shape, arrays, noisy):
    import keras
    _common.set_seed(seed)
    model, _ = av.make_builder(name, audio_shape, steps, args)()
    start = time.perf_counter()
    model.fit(train_dataset(arrays["train"], inputs, rate, seed,
                            args.batch_size), epochs=args.epochs, verbose=0,
              shuffle=False)
    seconds = time.perf_counter() - start
    test = arrays["test"]
    result = {"full": accuracy(model, inputs, test), "seconds": seconds}
    if len(inputs) > 1:
        for missing in inputs:
            presence = [0.0 if i == missing else 1.0 for i in inputs]
            result[f"no_{missing}"] = accuracy(model, inputs, test,
                                               presence)
        result["noise"] = {
            m: [(level, accuracy(model, inputs, data))
                for level, data in curves] for m, curves in noisy.items()}
    keras.backend.clear_session()
    return result


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=av.BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=av.LEARNING_RATE)
    parser.add_argument("--schedule", choices=av.SCHEDULES,
                        default="cosine")
    parser.add_argument("--dropout", type=float, default=DROPOUT,
                        help="modality dropout rate of every input")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--no-noise", action="store_true",
                        help="skip the noise curves")
    args = parser.parse_args(argv)
    args.jit = False
    if args.quick:
        args.limit = args.limit or QUICK["limit"]
        args.seeds = args.seeds or QUICK["seeds"]
        args.epochs = args.epochs or QUICK["epochs"]
    args.seeds = args.seeds or [0, 1, 2]
    args.epochs = args.epochs or av.EPOCHS["degraded"]
    _common.require_av_mnist_sources(args)
    wall = time.perf_counter()
    _common.configure_tensorflow(args.threads)
    _common.print_header(
        "AV-MNIST (degraded): missing and noisy modalities", args,
        [f"seeds {args.seeds}; epochs {args.epochs}; batch "
         f"{args.batch_size}; Adam {args.lr:g}, schedule {args.schedule}",
         f"modality dropout {args.dropout} per input (or none)",
         f"towers: image {av.IMAGE_TOWER}; audio {av.AUDIO_TOWER}; trunk "
         f"{av.TRUNK}; fusion layers at their defaults (presence mask on)"])
    arrays, _ = _common.load_av_mnist(args.data, args.cache, "degraded",
                                      limit=args.limit)
    audio_shape = tuple(arrays["train"]["audio"].shape[1:])
    steps = args.epochs * math.ceil(len(arrays["train"]["label"])
                                    / args.batch_size)
    noisy = {} if args.no_noise else noisy_tests(args, arrays["test"])

    plan = [("image_only", ("image",), 0.0), ("audio_only", ("audio",), 0.0)]
    for fusion in FUSIONS:
        plan += [(fusion, ("image", "audio"), 0.0),
                 (fusion, ("image", "audio"), args.dropout)]
    results = {}
    for name, inputs, rate in plan:
        key = name if rate == 0 or len(inputs) == 1 else \
            f"{name}+dropout"
        runs = []
        for seed in args.seeds:
            r = run(args, name, inputs, rate, seed, steps, audio_shape,
                    arrays, noisy)
            runs.append(r)
            print(f"{key} seed {seed}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in r.items()
                if isinstance(v, float)), file=sys.stderr, flush=True)
        results[key] = runs

    def mean(key, field):
        return _common.mean_std([r[field] for r in results[key]])

    uni = {k: mean(k, "full")[0] for k in ("image_only", "audio_only")}
    header = ["model", "full %", "image missing %", "audio missing %"]
    rows = [["image_only", _common.pct(*mean("image_only", "full")), "",
             ""], ["audio_only", _common.pct(*mean("audio_only", "full")),
                   "", ""]]
    full_drop, missing_gap = {}, {}
    for fusion in FUSIONS:
        for key in (fusion, f"{fusion}+dropout"):
            rows.append([key, _common.pct(*mean(key, "full")),
                         _common.pct(*mean(key, "no_image")),
                         _common.pct(*mean(key, "no_audio"))])
        for key in (fusion, f"{fusion}+dropout"):
            missing_gap[key] = max(
                100 * (uni[MISSING[m]] - mean(key, f"no_{m}")[0])
                for m in ("image", "audio"))
        full_drop[fusion] = 100 * (mean(fusion, "full")[0]
                                   - mean(f"{fusion}+dropout", "full")[0])
    print(_common.markdown_table(header, rows))
    print(f"(unimodal models: image_only {100 * uni['image_only']:.1f}%, "
          f"audio_only {100 * uni['audio_only']:.1f}%)")
    curves = {}
    if noisy:
        print()
        header = ["model", "noisy input"] + [
            f"level {i}" for i in range(len(next(iter(noisy.values()))))]
        rows = []
        for key in results:
            if "noise" not in results[key][0]:
                continue
            curves[key] = {}
            for m in noisy:
                levels = [lv for lv, _ in results[key][0]["noise"][m]]
                accs = [_common.mean_std([r["noise"][m][i][1]
                                          for r in results[key]])[0]
                        for i in range(len(levels))]
                curves[key][m] = {"levels": levels, "accuracy": accs}
                rows.append([key, m] + [
                    f"{100 * a:.1f} ({lv if lv is None else round(lv, 2)})"
                    for a, lv in zip(accs, levels)])
        print(_common.markdown_table(header, rows))
    worst_drop = max(full_drop.values())
    worst_gap = max(missing_gap[f"{f}+dropout"] for f in FUSIONS)
    print()
    print(f"- full-input drop with dropout: {worst_drop:.2f} points "
          f"(target <= 0.5): {'met' if worst_drop <= 0.5 else 'MISSED'}")
    print(f"- worst missing-modality gap with dropout: {worst_gap:.2f} "
          f"points (target <= 1.5): "
          f"{'met' if worst_gap <= 1.5 else 'MISSED'}")
    print("- without dropout: " + ", ".join(
        f"{f} gap {missing_gap[f]:.2f}" for f in FUSIONS))
    elapsed = time.perf_counter() - wall
    print(f"- wall time {elapsed:.0f} s")
    _common.emit_json({
        "full_drop_points": worst_drop, "missing_gap_points": worst_gap,
        "full_drop_points_by_fusion": full_drop,
        "missing_gap_points_by_model": missing_gap,
        "accuracy": {k: {f: mean(k, f)[0] for f in results[k][0]
                         if isinstance(results[k][0][f], float)
                         and f != "seconds"} for k in results},
        "noise_curves": curves, "seeds": list(args.seeds),
        "epochs": args.epochs, "dropout": args.dropout,
        "quick": bool(args.quick), "wall_seconds": elapsed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
