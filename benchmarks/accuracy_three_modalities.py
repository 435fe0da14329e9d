"""Three digits accuracy: every fusion type at its defaults vs one modality.

The three-digits set of issue 12 (`keras_mm.datasets.build_three_digits`,
built from `../shared/data` into the cache folder): per example an MNIST
image (28x28x1), an FSDD spoken digit (8 kHz) and a generated 32x32 RGB
JPEG photo of the same digit. Two variants: `clean`, and `degraded` (MNIST
blurred and noised, audio at -3 dB SNR, photos clean). Every file goes
through the toolkit's `ImagePreprocessor` / `AudioPreprocessor` once (the
log-mel is computed in the preprocessor, so the audio tower runs with
`frontend=None`), then the arrays stay in memory.

Everything runs at the defaults: the towers' (`ImageTower`, `AudioTower`:
no tower argument is set), each fusion layer's (only `type` is given; FiLM
takes its default target, the largest feature map: the photo), the
builder's head, and the trainer's optimizer (`keras_mm.compile_model`:
Adam at its default learning rate 1e-3, constant). The training length is
the issue's first try: 8 epochs, batch 64, on the 7,000 training rows; the
test split (2,000 rows) gives the accuracy.

Models: `mnist_only`, `audio_only`, `photo_only` (one input, same tower and
head, no fusion: what `keras_mm.build_unimodal_spec` gives) and one model
per fusion type. For each variant the table shows each model's test
accuracy against the best single modality, and whether every fusion type is
within 1 point of it or above. The last line is one JSON object: per
variant, every model's accuracy (fractions, mean over seeds),
`best_single` (and its name), `below_best_single` (the fusion types more
than 1 point under it) and `all_within_1_point`; plus `all_within_1_point`
over both variants.

Timing: as in `accuracy_av_mnist.py`, two worker processes (one per core,
1 TensorFlow thread each) train two models side by side by default.

Usage:
    python benchmarks/accuracy_three_modalities.py          # full (1 seed)
    python benchmarks/accuracy_three_modalities.py --quick  # smoke run
"""

import sys
import time

import _common

FUSION_TYPES = ("concat", "weighted", "gated", "attention", "tensor",
                "low_rank", "joint_transformer", "cross_attention", "film")
VARIANTS = ("clean", "degraded")
INPUTS = ("mnist", "audio", "photo")
UNIMODAL = {f"{name}_only": name for name in INPUTS}
EPOCHS = 8
BATCH_SIZE = 64
MARGIN = 0.01  # "within 1 point of the best single modality, or above"

# Smoke run: a few hundred rows, 2 epochs, 3 fusion types (figures not
# meaningful).
QUICK = {"limit": 400, "seeds": [0], "epochs": 2,
         "fusions": ["concat", "gated", "film"]}


def model_spec(name, audio_shape):
    """The `keras_mm.build_model` spec of model `name`, all defaults."""
    shapes = {"mnist": [28, 28, 1], "audio": list(audio_shape),
              "photo": [32, 32, 3]}
    inputs = {k: {"modality": "audio" if k == "audio" else "image",
                  "shape": shapes[k],
                  "tower": {"frontend": None} if k == "audio" else {}}
              for k in INPUTS}
    if name in UNIMODAL:
        inputs = {UNIMODAL[name]: inputs[UNIMODAL[name]]}
    return {"name": f"three_digits_{name}", "inputs": inputs,
            "fusion": None if name in UNIMODAL else {"type": name},
            "heads": {"label": {"type": "classification",
                                "num_classes": 10}}}


def make_builder(name, audio_shape, args):
    def build():
        import keras_mm
        spec = model_spec(name, audio_shape)
        model = keras_mm.build_model(spec)
        keras_mm.compile_model(model, jit_compile=args.jit)
        return model, tuple(spec["inputs"])
    return build


COST_RANK = {"cross_attention": 9, "film": 8, "attention": 7,
             "joint_transformer": 6, "weighted": 5, "tensor": 4,
             "low_rank": 3, "gated": 2, "concat": 2}


def load_variant(args, variant):
    """The worker's arrays of `variant` (`_common.worker_arrays`)."""
    return _common.load_three_digits(args.data, args.cache, variant,
                                     limit=args.limit)


def train_model(name):
    """Trains model `name` from every seed on every variant (in a worker)."""
    args = _common.WORKER["args"]
    runner = _common.SeedRunner(None)
    out = {}
    for variant in args.variants:
        arrays = _common.worker_arrays(variant)
        audio_shape = tuple(arrays["train"]["audio"].shape[1:])
        runner.build = make_builder(name, audio_shape, args)
        out[variant] = runner.run_seeds(
            args.seeds, audio_shape, arrays["train"], arrays["test"],
            "label", args.epochs, args.batch_size,
            lambda seed, acc, _: f"[{variant}] {name} seed {seed}: accuracy "
            f"{acc:.4f} (elapsed "
            f"{time.time() - _common.WORKER['start']:.0f} s)")
    return name, out


def summarize(results, fusions, variants):
    """Per variant: accuracies, the best single modality, the fusion types
    more than `MARGIN` below it."""
    summary = {}
    for variant in variants:
        res = results[variant]
        single = {n: res[n]["mean"] for n in UNIMODAL}
        best_name = max(single, key=single.get)
        best = single[best_name]
        fused = {f: res[f]["mean"] for f in fusions}
        below = sorted(f for f, a in fused.items() if a < best - MARGIN)
        summary[variant] = dict(single, fusion=fused, best_single=best,
                                best_single_model=best_name,
                                below_best_single=below,
                                all_within_1_point=not below)
    summary["all_within_1_point"] = all(
        summary[v]["all_within_1_point"] for v in variants)
    return summary


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: {EPOCHS}")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--fusions", nargs="+", choices=FUSION_TYPES,
                        default=None, help="fusion types (default: all)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=list(VARIANTS))
    parser.add_argument("--jit", action="store_true",
                        help="jit_compile=True (XLA)")
    _common.add_worker_flags(parser)
    args = parser.parse_args(argv)
    _common.apply_quick(args, QUICK, ("limit", "seeds", "epochs", "fusions"))
    args.seeds = args.seeds or [0]
    args.epochs = args.epochs or EPOCHS
    fusions = list(args.fusions or FUSION_TYPES)
    _common.require_av_mnist_sources(
        args, what="the three-digits source data")
    wall = time.perf_counter()
    workers, threads = _common.worker_plan(args.workers, args.threads)
    _common.configure_tensorflow(args.threads)
    _common.print_header(
        "Three digits test accuracy, every fusion type at its defaults",
        args,
        [f"seeds {args.seeds}; {args.epochs} epochs; batch "
         f"{args.batch_size}; optimizer: keras_mm.compile_model's default "
         f"(Adam 1e-3, constant); jit_compile={args.jit}",
         "towers, fusion layers and head at their defaults (audio tower "
         "frontend=None: log-mel from AudioPreprocessor "
         f"{_common.AV_MNIST_AUDIO})",
         f"{workers} worker process(es), {threads or 'default'} TensorFlow "
         "thread(s) each"])
    for variant in args.variants:  # build + preprocess once, up front
        _common.load_three_digits(args.data, args.cache, variant,
                                  limit=args.limit)
    models = list(UNIMODAL) + fusions
    order = sorted(models, key=lambda n: -COST_RANK.get(n, 0))
    results = {v: {} for v in args.variants}
    for name, per_variant in _common.run_tasks(
            train_model, order, workers, _common.init_worker,
            (args, threads, time.time(), load_variant)):
        for variant, r in per_variant.items():
            results[variant][name] = r
    summary = summarize(results, fusions, args.variants)

    header = ["model"]
    for variant in args.variants:
        header += [f"{variant} acc %", f"{variant} vs best single (points)",
                   f"{variant} s/epoch"]
    rows = []
    for name in models:
        row = [name]
        for variant in args.variants:
            r = results[variant][name]
            best = summary[variant]["best_single"]
            std = r["std"] if len(args.seeds) > 1 else None
            row += [_common.pct(r["mean"], std),
                    f"{100 * (r['mean'] - best):+.1f}",
                    f"{r['seconds_per_epoch']:.2f}"]
        rows.append(row)
    print(_common.markdown_table(header, rows))
    print()
    for variant in args.variants:
        s = summary[variant]
        print(f"- {variant}: best single modality {s['best_single_model']} "
              f"{100 * s['best_single']:.1f}%; every fusion type within 1 "
              f"point or above: {'yes' if s['all_within_1_point'] else 'NO'}"
              + (f" (below: {', '.join(s['below_best_single'])})"
                 if s["below_best_single"] else ""))
    elapsed = time.perf_counter() - wall
    print(f"- wall time {elapsed:.0f} s")
    summary["seconds_per_epoch"] = {
        v: {n: results[v][n]["seconds_per_epoch"] for n in models}
        for v in args.variants}
    summary.update(seeds=list(args.seeds), epochs=args.epochs,
                   quick=bool(args.quick), wall_seconds=elapsed)
    _common.emit_json(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
