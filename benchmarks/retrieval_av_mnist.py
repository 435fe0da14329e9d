"""AV-MNIST image <-> audio retrieval with a contrastive dual encoder.

What it measures, on both AV-MNIST variants (`clean`, and `degraded`:
PCA-reduced images + noisy audio), built from `../shared/data` by
`keras_mm.datasets.build_av_mnist` into the cache folder and preprocessed
once by the toolkit's `ImagePreprocessor` / `AudioPreprocessor` (log-mel in
the preprocessor, the audio tower with `frontend=None`), as in
`accuracy_av_mnist.py`, then kept in memory:

1. Retrieval. A dual encoder from a `keras_mm.build_model` spec (`fusion:
   none`, the image and audio towers of `accuracy_av_mnist.py`, a
   `contrastive` head at a recipe's defaults but for `loss`) is trained on
   the train split's 8,000 pairs, labels unused, with the CLIP loss and with
   the SigLIP loss, from 3 seeds each. On the 2,000 test pairs
   (`keras_mm.evaluation.retrieval`), both directions: instance R@1 (the
   row's own pair first), class-level R@1 (the first retrieved item of the
   query's class) and the median rank; and zero-shot accuracy of the test
   images against audio class prototypes (the mean audio embedding of each
   class over the *train* split). AV-MNIST pairs each image with a random
   recording of its digit (recordings reused across images: 300 test
   recordings for 2,000 test images), so the instance pairing carries no
   information beyond the class: instance R@1 is near chance (about 1/200)
   by construction, and on `clean`, where a reused recording gives the
   same embedding, the tie rule of `retrieval_metrics` (pessimistic) puts
   the pair behind its copies. The class-level figures are the ones that
   mean something here.
2. Pretrain-then-finetune. Image-only and audio-only classifiers (one-input
   `build_model` specs: the same tower, no fusion, no trunk, a
   `classification` head) trained on a seeded stratified 10% of the
   training labels (800 rows), their tower either initialised from the
   contrastive model's tower or from scratch; same seed (so the same head
   initialisation), subset, optimizer and epochs; all layers train. The
   tower weights are copied in process
   (`clf.get_layer("image_tower").set_weights(dual.get_layer(
   "image_tower").get_weights())`), the way a recipe's `tower.init_from`
   copies them from a finished run
   (`keras_mm/training/tower_init.initialize_towers`: every tower weight,
   in order, checked by count and shape); both models see the same
   preprocessed arrays, as `init_from` reuses the source run's fitted
   preprocessor. The gain is fine-tuned minus scratch test accuracy, in
   points.
3. Throughput. The CLIP dual encoder against the same dual encoder written
   in plain Keras (`_plain_clip.py`): the same tower layers (`ImageTower`
   / `AudioTower` rebuilt from the keras_mm model's tower configs),
   `Dense` projections, L2 normalisation and a hand-written symmetric
   InfoNCE loss with CLIP's learnable, clipped temperature in a
   `keras.Model.train_step`. The plain model gets the keras_mm model's
   weights (checked: the same embeddings and loss before timing); both
   train the same number of steps on the same in-memory batches, in the
   main process after the other trainings, `--repeats` timed `fit` calls
   each, interleaved (A B B A ...); examples/s is the median over
   repeats, the ratio the median of the paired ratios keras_mm / plain
   (the protocol and step timer of `train_throughput.py`, whose `time_fit`
   is imported).

Settings. The contrastive head runs at a recipe's defaults
(`embedding_dim` 128, CLIP temperature 0.07 clipped at scale 100, SigLIP
scale 10 and bias `-log(batch size)` = -4.85: a recipe sets the bias from
`training.batch_size`; the spec-level layer default is the paper's -10),
and the optimizer is the trainer's default (Adam 1e-3, constant).
What is not a default, and why:
- towers `filters=[8, 16, 32]`, `dim=64`, `dropout=0.1` (imported from
  `accuracy_av_mnist.py`, whose header gives the reason: small towers, so
  that the whole run fits in minutes on 2 cores);
- contrastive batch 128 (the trainer's default is 32): the negatives come
  from the batch, and with 10 classes a batch of 32 has about 3 rows of a
  row's own class; 128 gives more negatives per step and 4x fewer steps
  per epoch;
- contrastive epochs 12 (trainer default 10): at the paper's bias -10,
  SigLIP's loss sat on its collapsed plateau (one constant embedding, loss
  5.85 at batch 128) for its first 3-4 epochs before it learned
  (measured: degraded, seed 0), and the runs before 2026-12-04 used it;
  CLIP's loss is flat by epoch 10;
- classifiers: batch 32 (the default), 30 epochs (750 steps) on the 800
  labelled rows (the default 10 epochs would be only 250 steps);
- not the 5e-3 cosine schedule of `accuracy_av_mnist.py`: measured (quick
  subset, degraded, 15 epochs), CLIP reached class R@1 0.28 with it
  against 0.48 with the constant 1e-3, and SigLIP stayed collapsed on a
  constant embedding.

Timing: these models are too small for TensorFlow to keep two cores busy,
so by default two worker processes (one per core, 1 TensorFlow thread
each) run the trainings side by side (`--workers 1`: one at a time). The
throughput rounds run afterwards in the main process alone, with
TensorFlow's default threads (`--threads`).

Targets, printed (not enforced): class-level image -> audio R@1 >= 0.85
(degraded, CLIP), fine-tune gain >= 3 points (degraded, 10% labels, the
worse of image-only and audio-only), throughput ratio >= 0.97. On
`degraded` the image (4 principal components) caps both image figures:
an image-only classifier tops out near 62% with every label
(`../shared/data/README.md`: 62.3%), and class-level image -> audio R@1
cannot exceed how often the image tells its digit (measured, seed 0: R@1
0.60; image-only 61.5% from scratch and from the CLIP towers alike with
10% of the labels, so no gain is left to win there). The last
line is one JSON object (`class_r1_image_to_audio`, `finetune_gain_points`,
`throughput_ratio`, the per-variant / per-loss figures; fractions, means
over seeds).

Usage:
    python benchmarks/retrieval_av_mnist.py            # full (about 9 min)
    python benchmarks/retrieval_av_mnist.py --quick    # smoke run (1 min)
    python benchmarks/retrieval_av_mnist.py --variants degraded --seeds 0
                                                       # one seed (< 3 min)
(times on 2 idle cores, 2026-12-03: 12 dual-encoder trainings of about
70 s, each with its two fine-tuned classifiers, and 6 pairs of
classifiers from scratch of about 20 s, two at a time, then the
throughput rounds; 11 min and 100 s a training on 2 loaded cores.)
"""

import statistics
import sys
import time
import warnings

import _common
from _plain_clip import plain_clip_twin
from accuracy_av_mnist import AUDIO_TOWER, IMAGE_TOWER, av_inputs
from train_throughput import time_fit

VARIANTS = ("clean", "degraded")
LOSSES = ("clip", "siglip")
MODALITIES = ("image", "audio")
NUM_CLASSES = 10
BATCH_SIZE = 128
EPOCHS = 12
LABEL_FRACTION = 0.1
FINETUNE_BATCH_SIZE = 32
FINETUNE_EPOCHS = 30
LEARNING_RATE = 1e-3
THROUGHPUT = {"steps": 60, "repeats": 6}
TARGETS = {"class_r1": 0.85, "gain_points": 3.0, "ratio": 0.97}

# The smoke run: the degraded variant, one seed, 2,048 training pairs (the
# test split stays whole), few epochs and timing steps.
QUICK = {"limit": 2048, "seeds": [0], "epochs": 15, "finetune_epochs": 20,
         "variants": ["degraded"], "steps": 20, "repeats": 4}


def dual_spec(loss, audio_shape, batch_size=BATCH_SIZE):
    """The `keras_mm.build_model` spec of the contrastive dual encoder
    (SigLIP's bias as a recipe of `batch_size` gets it)."""
    from keras_mm.recipes.recipe import siglip_bias

    return {
        "name": f"av_mnist_dual_{loss}",
        "inputs": av_inputs(audio_shape),
        "fusion": "none",
        "heads": {"align": dict(
            {"type": "contrastive", "loss": loss},
            **({"loss_options": {"bias": siglip_bias(batch_size)}}
               if loss == "siglip" else {}))},
    }


def classifier_spec(modality, audio_shape):
    """One input of the dual encoder (same tower), no fusion nor trunk, a
    classification head."""
    spec = dual_spec("clip", audio_shape)
    return {"name": f"av_mnist_{modality}_classifier",
            "inputs": {modality: spec["inputs"][modality]},
            "fusion": None,
            "heads": {"label": {"type": "classification",
                                "num_classes": NUM_CLASSES}}}


def label_subset(labels, fraction, seed):
    """A seeded stratified subset: `fraction` of each class's rows (sorted
    indices)."""
    import numpy as np
    rng = np.random.default_rng([int(seed), 16])
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.choice(rows, max(1, round(fraction * len(rows))),
                               replace=False))
    return np.sort(np.concatenate(keep))


def compile_dual(model, lr):
    """No compiled loss: the contrastive head's loss layers add theirs."""
    import keras

    import keras_mm
    return keras_mm.compile_model(model, optimizer=keras.optimizers.Adam(lr))


def build_dual(loss, audio_shape, seed, lr, batch_size=BATCH_SIZE):
    import keras_mm
    _common.set_seed(seed)
    return compile_dual(keras_mm.build_model(
        dual_spec(loss, audio_shape, batch_size)), lr)


def embeddings(model, split):
    """`(image, audio)` normalised embeddings `[n, dim]` of a split."""
    out = model.predict({"image": split["image"], "audio": split["audio"]},
                        batch_size=500, verbose=0)["align"]
    return out[:, 0], out[:, 1]


def retrieval_figures(model, train, test):
    """The retrieval and zero-shot figures of a trained dual encoder."""
    from keras_mm.evaluation.retrieval import (retrieval_report,
                                               zero_shot_accuracy)
    image, audio = embeddings(model, test)
    _, train_audio = embeddings(model, train)
    report = retrieval_report(image, audio, test["label"],
                              names=("image", "audio"), ks=(1, 5))
    out = {}
    for direction, m in report.items():
        out[f"r1_{direction}"] = m["r@1"]
        out[f"class_r1_{direction}"] = m["class_r@1"]
        out[f"class_r5_{direction}"] = m["class_r@5"]
        out[f"median_rank_{direction}"] = m["median_rank"]
    out["zero_shot_image_from_audio"] = zero_shot_accuracy(
        image, train_audio, test["label"], prototype_labels=train["label"])
    return out


def train_classifier(modality, train, test, rows, seed, args, dual=None):
    """Test accuracy of the `modality`-only classifier trained on `rows`
    of `train`; its tower starts from `dual`'s when given."""
    import keras
    import numpy as np

    import keras_mm
    _common.set_seed(seed)
    clf = keras_mm.build_model(classifier_spec(
        modality, train["audio"].shape[1:]))
    name = f"{modality}_tower"
    if dual is not None:
        clf.get_layer(name).set_weights(dual.get_layer(name).get_weights())
    keras_mm.compile_model(clf, optimizer=keras.optimizers.Adam(args.lr))
    clf.fit({modality: train[modality][rows]},
            {"label": train["label"][rows]},
            batch_size=FINETUNE_BATCH_SIZE, epochs=args.finetune_epochs,
            shuffle=True, verbose=0)
    probs = clf.predict({modality: test[modality]}, batch_size=500,
                        verbose=0)["label"]
    return float(np.mean(np.argmax(probs, -1) == test["label"]))


def load_variant(args, variant):
    """The worker's arrays of `variant` (`_common.worker_arrays`)."""
    return _common.load_av_mnist(args.data, args.cache, variant,
                                 limit=args.limit)[0]


def run_task(task):
    """`("dual", variant, seed, loss)`: trains the dual encoder, its
    retrieval figures and the fine-tuned classifiers; `("scratch", variant,
    seed, None)`: the classifiers from scratch. Runs in a worker."""
    import keras
    kind, variant, seed, loss = task
    args = _common.WORKER["args"]
    arrays = _common.worker_arrays(variant)
    train, test = arrays["train"], arrays["test"]
    rows = label_subset(train["label"], LABEL_FRACTION, seed)
    out = {}
    start = time.perf_counter()
    if kind == "dual":
        dual = build_dual(loss, train["audio"].shape[1:], seed, args.lr,
                          args.batch_size)
        timer = _common._epoch_timer()
        history = dual.fit({"image": train["image"], "audio": train["audio"]},
                           batch_size=args.batch_size, epochs=args.epochs,
                           shuffle=True, verbose=0, callbacks=[timer])
        out.update(retrieval_figures(dual, train, test))
        out["final_loss"] = float(history.history["loss"][-1])
        out["seconds_per_epoch"] = statistics.median(timer.times)
        for modality in MODALITIES:
            out[f"finetuned_{modality}"] = train_classifier(
                modality, train, test, rows, seed, args, dual)
    else:
        for modality in MODALITIES:
            out[f"scratch_{modality}"] = train_classifier(
                modality, train, test, rows, seed, args)
    keras.backend.clear_session()
    shown = {k: round(v, 3) for k, v in out.items()
             if k.startswith(("class_r1", "zero", "finetuned", "scratch"))}
    print(f"[{variant}] {loss or 'scratch'} seed {seed}: {shown} "
          f"({time.perf_counter() - start:.0f} s; elapsed "
          f"{time.time() - _common.WORKER['start']:.0f} s)", file=sys.stderr,
          flush=True)
    return task, out


# -- throughput ---------------------------------------------------------------

def measure_throughput(train, args):
    """keras_mm vs plain-Keras CLIP dual encoder: examples/s and ratios."""
    import keras
    import tensorflow as tf
    toolkit = build_dual("clip", train["audio"].shape[1:], 0, args.lr)
    probe = {"image": train["image"][:args.batch_size],
             "audio": train["audio"][:args.batch_size]}
    plain, check = plain_clip_twin(toolkit, probe, args.lr, MODALITIES)
    emb_diff = check["embedding_max_diff"]
    print(f"[throughput] same embeddings (max |diff| {emb_diff:.1e}) and "
          f"loss ({check['toolkit_loss']:.4f} / {check['plain_loss']:.4f}) "
          "before training; "
          f"{_common.count_params(toolkit)} trainable parameters each",
          file=sys.stderr, flush=True)
    dataset = (tf.data.Dataset.from_tensor_slices(
        {"image": train["image"], "audio": train["audio"]})
        .batch(args.batch_size, drop_remainder=True).cache().repeat())
    models = {"toolkit": toolkit, "plain": plain}
    # fit's default shuffle=True does not apply to a tf.data input (the
    # batches are the same for both models, in the same order).
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    for model in models.values():       # warm-up: graph tracing
        time_fit(model, dataset, max(2, args.steps // 4))
    eps = {"toolkit": [], "plain": []}
    ratios = []
    for r in range(args.repeats):
        order = ("toolkit", "plain") if r % 2 == 0 else ("plain", "toolkit")
        got = {name: time_fit(models[name], dataset, args.steps)
               * args.batch_size for name in order}
        for name in order:
            eps[name].append(got[name])
        ratios.append(got["toolkit"] / got["plain"])
        print(f"[throughput] round {r}: keras_mm {got['toolkit']:.0f} "
              f"examples/s, plain Keras {got['plain']:.0f} examples/s",
              file=sys.stderr, flush=True)
    keras.backend.clear_session()
    return {"toolkit_eps": statistics.median(eps["toolkit"]),
            "plain_keras_eps": statistics.median(eps["plain"]),
            "ratio": statistics.median(ratios), "ratios": ratios,
            "embedding_max_diff": emb_diff}


# -- report -------------------------------------------------------------------

def summarize(results, args):
    """Means / stds over seeds: `{variant: {loss: {metric: (mean, std)}}}`
    and `{variant: {"scratch": {metric: (mean, std)}}}`."""
    out = {}
    for (kind, variant, seed, loss), figures in results.items():
        key = loss if kind == "dual" else "scratch"
        block = out.setdefault(variant, {}).setdefault(key, {})
        for metric, value in figures.items():
            block.setdefault(metric, []).append(value)
    return {v: {k: {m: _common.mean_std(vals) for m, vals in b.items()}
                for k, b in per.items()} for v, per in out.items()}


def gains(stats, variant, loss):
    """Fine-tuned minus scratch accuracy in points, per modality (means)."""
    return {m: 100.0 * (stats[variant][loss][f"finetuned_{m}"][0]
                        - stats[variant]["scratch"][f"scratch_{m}"][0])
            for m in MODALITIES}


def print_tables(stats, args):
    rows = []
    for variant in args.variants:
        for loss in args.losses:
            s = stats[variant][loss]
            rows.append([
                variant, loss,
                _common.pct(*s["class_r1_image_to_audio"]),
                _common.pct(*s["class_r1_audio_to_image"]),
                _common.pct(*s["zero_shot_image_from_audio"]),
                _common.pct(*s["r1_image_to_audio"]),
                _common.pct(*s["r1_audio_to_image"]),
                f"{s['median_rank_image_to_audio'][0]:.0f}",
                f"{s['seconds_per_epoch'][0]:.2f}"])
    print(_common.markdown_table(
        ["variant", "loss", "class R@1 image->audio %",
         "class R@1 audio->image %", "zero-shot image (train audio "
         "prototypes) %", "instance R@1 image->audio %",
         "instance R@1 audio->image %", "median rank image->audio",
         "s/epoch"], rows))
    print()
    rows = []
    for variant in args.variants:
        for m in MODALITIES:
            scratch = stats[variant]["scratch"][f"scratch_{m}"]
            row = [variant, f"{m} only", _common.pct(*scratch)]
            for loss in args.losses:
                ft = stats[variant][loss][f"finetuned_{m}"]
                row += [_common.pct(*ft),
                        f"{gains(stats, variant, loss)[m]:+.1f}"]
            rows.append(row)
    header = ["variant", "classifier",
              f"scratch acc % ({100 * LABEL_FRACTION:.0f}% labels)"]
    for loss in args.losses:
        header += [f"from {loss} towers %", f"{loss} gain (points)"]
    print(_common.markdown_table(header, rows))
    print()


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"contrastive epochs (default {EPOCHS}; "
                             f"quick {QUICK['epochs']})")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help=f"classifier epochs (default {FINETUNE_EPOCHS};"
                             f" quick {QUICK['finetune_epochs']})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="contrastive batch (the negatives' pool)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help="Adam learning rate (constant)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=None, help="default: both (quick: "
                                           "degraded)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES,
                        default=list(LOSSES))
    parser.add_argument("--steps", type=int, default=THROUGHPUT["steps"],
                        help="training steps per timed throughput fit")
    parser.add_argument("--repeats", type=int,
                        default=THROUGHPUT["repeats"],
                        help="timed throughput fits per model")
    _common.add_worker_flags(parser, "trainings")
    args = parser.parse_args(argv)
    _common.apply_quick(args, QUICK, ("limit", "seeds", "epochs",
                                      "finetune_epochs", "variants"))
    if args.quick:
        args.steps = min(args.steps, QUICK["steps"])
        args.repeats = min(args.repeats, QUICK["repeats"])
    args.seeds = args.seeds or [0, 1, 2]
    args.epochs = args.epochs or EPOCHS
    args.finetune_epochs = args.finetune_epochs or FINETUNE_EPOCHS
    args.variants = args.variants or list(VARIANTS)
    _common.require_av_mnist_sources(args)
    wall = time.perf_counter()
    workers, threads = _common.worker_plan(args.workers, args.threads)
    _common.configure_tensorflow(args.threads)
    _common.print_header(
        "AV-MNIST image <-> audio retrieval, contrastive pretraining "
        "(keras_mm)", args,
        [f"seeds {args.seeds}; variants {args.variants}; losses "
         f"{args.losses}; contrastive {args.epochs} epochs, batch "
         f"{args.batch_size}; Adam {args.lr:g} constant",
         f"classifiers: {100 * LABEL_FRACTION:.0f}% of the training labels "
         f"(stratified, seeded), {args.finetune_epochs} epochs, batch "
         f"{FINETUNE_BATCH_SIZE}; fine-tuned (tower weights copied from "
         "the dual encoder) vs from scratch",
         f"{workers} worker process(es) training in parallel, "
         f"{threads or 'default'} TensorFlow thread(s) each; throughput: "
         f"{args.repeats} interleaved rounds of {args.steps} steps per "
         "model in the main process",
         f"towers: image {IMAGE_TOWER}; audio {AUDIO_TOWER}; contrastive "
         "head at a recipe's defaults but for `loss` (SigLIP bias "
         "-log(batch))",
         f"audio features (AudioPreprocessor): {_common.AV_MNIST_AUDIO}"])

    _common.prepare_av_mnist(args)   # build + preprocess once, before workers
    tasks = [("dual", v, s, loss) for v in args.variants for s in args.seeds
             for loss in args.losses]
    tasks += [("scratch", v, s, None) for v in args.variants
              for s in args.seeds]
    results = dict(_common.run_tasks(
        run_task, tasks, workers, _common.init_worker,
        (args, threads, time.time(), load_variant)))
    stats = summarize(results, args)

    train = _common.load_av_mnist(args.data, args.cache, args.variants[-1],
                                  limit=args.limit)[0]["train"]
    throughput = measure_throughput(train, args)
    del train

    print_tables(stats, args)
    print(_common.markdown_table(
        ["model (CLIP dual encoder)", "examples/s (median)",
         "ratio keras_mm / plain (median; min-max)"],
        [["keras_mm (build_model + contrastive head)",
          f"{throughput['toolkit_eps']:.0f}",
          f"{throughput['ratio']:.3f} ({min(throughput['ratios']):.3f}-"
          f"{max(throughput['ratios']):.3f})"],
         ["plain Keras (same towers, hand-written InfoNCE)",
          f"{throughput['plain_keras_eps']:.0f}", ""]]))
    print()

    # The headline figures: degraded (else the last variant run), CLIP
    # (else the first loss run).
    variant = "degraded" if "degraded" in args.variants else \
        args.variants[-1]
    loss = "clip" if "clip" in args.losses else args.losses[0]
    class_r1 = stats[variant][loss]["class_r1_image_to_audio"][0]
    gain = gains(stats, variant, loss)
    worst_gain = min(gain.values())
    ratio = throughput["ratio"]
    print(f"- class-level R@1 image -> audio ({variant}, {loss}) "
          f"{100 * class_r1:.1f}% (target >= "
          f"{100 * TARGETS['class_r1']:.0f}%): "
          f"{'met' if class_r1 >= TARGETS['class_r1'] else 'MISSED'}")
    print(f"- fine-tune gain ({variant}, {loss} towers, "
          f"{100 * LABEL_FRACTION:.0f}% labels, worse of image / audio) "
          f"{worst_gain:+.1f} points (target >= {TARGETS['gain_points']:g})"
          f": {'met' if worst_gain >= TARGETS['gain_points'] else 'MISSED'}")
    print(f"- throughput ratio keras_mm / plain Keras {ratio:.3f} (target "
          f">= {TARGETS['ratio']}): "
          f"{'met' if ratio >= TARGETS['ratio'] else 'MISSED'}")
    elapsed = time.perf_counter() - wall
    print(f"- wall time {elapsed:.0f} s")

    summary = {
        "class_r1_image_to_audio": class_r1,
        "finetune_gain_points": worst_gain,
        "throughput_ratio": ratio,
        "headline": {"variant": variant, "loss": loss},
        "retrieval": {v: {lo: {m: stats[v][lo][m][0] for m in
                               stats[v][lo] if not m.startswith(
                                   ("finetuned", "seconds"))}
                          for lo in args.losses} for v in args.variants},
        "finetune": {v: {
            "scratch": {m: stats[v]["scratch"][f"scratch_{m}"][0]
                        for m in MODALITIES},
            **{lo: {m: stats[v][lo][f"finetuned_{m}"][0]
                    for m in MODALITIES} for lo in args.losses},
            "gain_points": {lo: gains(stats, v, lo) for lo in args.losses}}
            for v in args.variants},
        "std": {v: {k: {m: ms[1] for m, ms in b.items()}
                    for k, b in stats[v].items()} for v in args.variants},
        "seconds_per_epoch": {v: {lo: stats[v][lo]["seconds_per_epoch"][0]
                                  for lo in args.losses}
                              for v in args.variants},
        "throughput": {k: throughput[k] for k in
                       ("toolkit_eps", "plain_keras_eps", "ratios")},
        "seeds": list(args.seeds), "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "label_fraction": LABEL_FRACTION, "batch_size": args.batch_size,
        "quick": bool(args.quick), "wall_seconds": elapsed,
    }
    _common.emit_json(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
