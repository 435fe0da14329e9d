"""Compressed exports of AV-MNIST models: int8 SavedModels and LiteRT files.

Data: the `degraded` AV-MNIST variant (PCA-reduced images + noisy audio),
built from `../shared/data` by `keras_mm.datasets.build_av_mnist` into the
cache folder.

Models: the shipped recipe `recipes/av_mnist.yaml` as a user runs it
(`keras_mm.training.train`, its towers, trunk, optimizer, 10 epochs and
batch 64; log-mel features in the preprocessor), on the degraded files,
with `fusion.type` concat and then FiLM, `compare_unimodal` off (the
unimodal models are not what this measures). Nothing else is changed.
A third model, the concat recipe with `trunk.hidden_units [2048, 2048]`
(4.5 M weights instead of 176 k; `--no-wide` skips it), is compressed the
same way: the SavedModel's fixed part (its graph of raw-input decoding and
checks, the golden and warm-up examples: about 0.9 MB) outweighs the
recipe's 0.7 MB of float weights, and this model shows the ratio once
the weights dominate, as with pretrained towers
(`wide_int8_size_ratio`, `wide_int8_acc_drop_points`; not targets).

Each trained model is exported through the toolkit's own compression path
(`keras_mm.compression.export_compressed`, what `keras-mm export RUN
--quantize MODE [--format litert]` runs): the float32 SavedModel (the
trainer's export), the int8 SavedModel (the next version) and LiteRT
float32 / float16 / dynamic / int8 (int8 calibrated on
`export.calibration_batches` = 16 training batches). For each, the parity
report on the test split gives: bytes and the ratio to float32 of the
same format (SavedModel: the whole version folder, graph included, and
its `variables/` apart; LiteRT: the `.tflite` file), test accuracy and its
drop in points, top-1 agreement with the float model, p50 latency at
batch 1 (SavedModel: the `serve_tensors` signature in process; LiteRT:
`ai_edge_litert` with its default threads). `max_metric_drop` is raised to
100 so that every artefact is written and measured; the refusal at the
default 1 point is tested in tests/test_compression.py.

Distillation: each trained model is the teacher of two students, each
trained with `distill: {teacher: <the run>}` at the section's defaults
(temperature 4, alpha 0.5), everything else the same recipe:
- half-width towers (`inputs.*.tower.dim` 32 instead of 64), the issue's
  target: `distill_gain_points`;
- the audio input alone (a device without a camera; `fusion: null`), the
  teacher's 64-d audio tower: `audio_student_distill_gain_points`.
The run's scoreboard holds the teacher, the student and the same student
trained without the teacher (`distill.compare_alone`), all on the test
split; a gain is the student's accuracy minus the student-alone's, in
points (the worse of the two fusions).

Targets (printed, not enforced): int8 SavedModel <= 0.35x the size within
0.5 points of accuracy; LiteRT int8 <= 0.3x within 1 point; the distilled
student beats the student trained alone; each for the worse of the two
fusions. `--no-compress` measures the distillation alone (the size keys
are then null).

The last line is one JSON object with `int8_size_ratio`,
`int8_acc_drop_points`, `litert_int8_size_ratio`,
`litert_int8_acc_drop_points` (worst over the fusions), the two distillation
gains, and the per-fusion reports.

Usage:
    python benchmarks/compression.py            # full
    python benchmarks/compression.py --quick    # smoke run
"""

import pathlib
import shutil
import sys
import time

import _common

FUSIONS = ("concat", "film")
LITERT_MODES = ("none", "float16", "dynamic", "int8")
QUICK = {"limit": 1024, "epochs": 2}
# The wide-trunk concat model: 4.5 M weights, enough to outweigh the
# export's fixed part (graph and assets, about 0.9 MB).
WIDE_TRUNK = (2048, 2048)
RECIPE = _common.REPO_ROOT / "recipes" / "av_mnist.yaml"


def recipe_for(args, fusion, folder, work, trunk=None):
    """The shipped AV-MNIST recipe on the degraded files, with `fusion`
    (and `trunk.hidden_units` when given)."""
    import yaml

    with open(RECIPE, encoding="utf-8") as f:
        recipe = yaml.safe_load(f)
    recipe["name"] = f"compression_{fusion}" + ("_wide" if trunk else "")
    if trunk:
        recipe["trunk"]["hidden_units"] = list(trunk)
    recipe["data"]["splits"] = {s: str(folder / f"{s}.csv")
                                for s in ("train", "test")}
    recipe["data"].pop("generate")
    recipe["fusion"]["type"] = fusion
    recipe["evaluation"]["compare_unimodal"] = False
    recipe["training"]["tensorboard"] = False
    if args.epochs:
        recipe["training"]["epochs"] = args.epochs
    recipe["export"].update(base_dir=str(work / "saved_models"),
                            name=recipe["name"], max_metric_drop=100)
    return recipe


STUDENTS = {
    "half-width towers": "image + audio, inputs.*.tower.dim 32",
    "audio only": "the audio input alone (a device without a camera), "
                  "the teacher's 64-d audio tower",
}


def distill(args, fusion, folder, work, teacher_dir, student):
    """Trains a `student` (a `STUDENTS` key) of `teacher_dir` and, by the
    scoreboard, the same student alone; returns the test accuracies."""
    from keras_mm.training import train

    recipe = recipe_for(args, fusion, folder, work)
    if student == "audio only":
        recipe["name"] = f"audio_student_{fusion}"
        del recipe["inputs"]["image"]
        recipe["fusion"] = None
    else:
        recipe["name"] = f"student_{fusion}"
        for entry in recipe["inputs"].values():
            entry["tower"]["dim"] = entry["tower"]["dim"] // 2
    recipe["distill"] = {"teacher": str(teacher_dir)}
    started = time.perf_counter()
    result = train(recipe, runs_dir=str(work / "runs"), verbose=0,
                   overwrite=True, export=False)
    rows = {r["model"]: r["digit_accuracy"] for r in result.scoreboard
            if r["split"] == "test"}
    seconds = time.perf_counter() - started
    print(f"{fusion}, {student} student and student alone in {seconds:.0f}"
          f" s: teacher {100 * rows['teacher']:.2f}%, student "
          f"{100 * rows['student']:.2f}%, alone "
          f"{100 * rows['student alone']:.2f}%", file=sys.stderr, flush=True)
    return {"teacher": rows["teacher"], "student": rows["student"],
            "student_alone": rows["student alone"],
            "gain_points": 100 * (rows["student"] - rows["student alone"]),
            "seconds": seconds}


def measure(args, fusion, folder, work, trunk=None):
    from keras_mm.compression.compressed_export import export_compressed
    from keras_mm.training import train

    started = time.perf_counter()
    result = train(recipe_for(args, fusion, folder, work, trunk),
                   runs_dir=str(work / "runs"), verbose=0, overwrite=True)
    seconds = time.perf_counter() - started
    accuracy = result.metrics["test"]["heads"]["digit"]["accuracy"]
    fusion = f"{fusion}_wide" if trunk else fusion
    print(f"{fusion}: trained in {seconds:.0f} s, test accuracy "
          f"{100 * accuracy:.2f}%", file=sys.stderr, flush=True)
    reports = {}
    for fmt, mode in ([("savedmodel", "int8")] + [
            ("litert", m) for m in LITERT_MODES]) if args.compress else []:
        started = time.perf_counter()
        _, report = export_compressed(result.run_dir, mode, fmt,
                                      verify=fmt == "savedmodel")
        report["seconds"] = round(time.perf_counter() - started, 1)
        reports[report["artefact"]] = report
        print(f"{fusion} {report['artefact']}: {report['seconds']} s",
              file=sys.stderr, flush=True)
    return {"train_seconds": seconds, "float_accuracy": accuracy,
            "reports": reports,
            "distill": {student: distill(args, fusion, folder, work,
                                         result.run_dir, student)
                        for student in STUDENTS}
            if args.distill and not trunk else None}


def rows_of(fusion, measured):
    rows = []
    for name, r in measured["reports"].items():
        head = r["heads"]["digit"]
        rows.append([
            fusion, name, f"{r['size_bytes']:,}", f"{r['size_ratio']:.3f}",
            f"{r['weights_bytes'] / r['reference_weights_bytes']:.3f}",
            f"{head['compressed']:.2f}", f"{head['drop_points']:+.2f}",
            f"{100 * head['top1_agreement']:.2f}",
            f"{r['latency_ms_p50']['compressed']:.3f}",
            f"{r['latency_ms_p50']['reference']:.3f}"])
    return rows


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="keep the first N rows of each split")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the recipe's (10)")
    parser.add_argument("--fusions", nargs="+", default=list(FUSIONS))
    parser.add_argument("--no-compress", dest="compress",
                        action="store_false",
                        help="skip the compressed exports (distillation "
                             "only)")
    parser.add_argument("--no-distill", dest="distill", action="store_false",
                        help="skip the distillation")
    parser.add_argument("--no-wide", dest="wide", action="store_false",
                        help="skip the wide-trunk concat model")
    args = parser.parse_args(argv)
    _common.apply_quick(args, QUICK, keys=("limit", "epochs"))
    _common.require_av_mnist_sources(args)
    wall = time.perf_counter()
    _common.configure_tensorflow(args.threads)
    _common.print_header(
        "AV-MNIST (degraded): int8 SavedModels and LiteRT files", args,
        [f"recipe {RECIPE.relative_to(_common.REPO_ROOT)} as shipped, "
         f"fusion {' / '.join(args.fusions)}, epochs "
         f"{args.epochs or 'the recipe (10)'}",
         "compressed by keras_mm.compression.export_compressed; reports on "
         "the test split"])
    folder = _common.ensure_av_mnist(args.data, args.cache, "degraded",
                                     limit=args.limit)
    work = pathlib.Path(args.cache) / "compression_runs"
    shutil.rmtree(work, ignore_errors=True)
    results = {fusion: measure(args, fusion, folder, work)
               for fusion in args.fusions}
    wide = measure(args, "concat", folder, work, WIDE_TRUNK) \
        if args.wide and args.compress else None
    header = ["fusion", "artefact", "bytes", "size ratio", "weights ratio",
              "accuracy %", "drop (points)", "top-1 agreement %",
              "p50 ms", "float32 p50 ms"]
    rows = []
    everything = dict(results)
    if wide is not None:
        everything["concat_wide"] = wide
    for fusion, measured in everything.items():
        rows.append([fusion, "float32 (Keras)", "", "", "",
                     f"{100 * measured['float_accuracy']:.2f}", "", "", "",
                     ""])
        rows += rows_of(fusion, measured)
    print(_common.markdown_table(header, rows))

    if args.distill:
        print()
        print(_common.markdown_table(
            ["fusion", "student", "teacher %", "student %",
             "student alone %", "gain (points)"],
            [[f, student, f"{100 * d['teacher']:.2f}",
              f"{100 * d['student']:.2f}",
              f"{100 * d['student_alone']:.2f}",
              f"{d['gain_points']:+.2f}"]
             for f, m in results.items()
             for student, d in m["distill"].items()]))

    def wide_figure(artefact, key):
        if wide is None:
            return None
        r = wide["reports"][artefact]
        return r["heads"]["digit"]["drop_points"] if key == "drop" \
            else r["size_ratio"]

    def worst(artefact, key):
        if not args.compress:
            return None
        values = []
        for measured in results.values():
            r = measured["reports"][artefact]
            values.append(r["heads"]["digit"]["drop_points"]
                          if key == "drop" else r["size_ratio"])
        return max(values)

    summary = {
        "int8_size_ratio": worst("savedmodel-int8", "size"),
        "int8_acc_drop_points": worst("savedmodel-int8", "drop"),
        "litert_int8_size_ratio": worst("litert-int8", "size"),
        "litert_int8_acc_drop_points": worst("litert-int8", "drop"),
        "distill_gain_points": min(
            m["distill"]["half-width towers"]["gain_points"]
            for m in results.values()) if args.distill else None,
        "audio_student_distill_gain_points": min(
            m["distill"]["audio only"]["gain_points"]
            for m in results.values()) if args.distill else None,
        "wide_int8_size_ratio": wide_figure("savedmodel-int8", "size"),
        "wide_int8_acc_drop_points": wide_figure("savedmodel-int8", "drop"),
    }
    targets = []
    if args.compress:
        targets += [
            ("int8 SavedModel size <= 0.35x",
             summary["int8_size_ratio"] <= 0.35),
            ("int8 SavedModel drop <= 0.5 points",
             summary["int8_acc_drop_points"] <= 0.5),
            ("LiteRT int8 size <= 0.3x",
             summary["litert_int8_size_ratio"] <= 0.3),
            ("LiteRT int8 drop <= 1 point",
             summary["litert_int8_acc_drop_points"] <= 1.0)]
    if args.distill:
        targets.append(("the distilled half-width student beats the "
                        "student alone", summary["distill_gain_points"] > 0))
    print()
    for what, met in targets:
        print(f"- {what}: {'met' if met else 'MISSED'}")
    print(f"- wall time {time.perf_counter() - wall:.0f} s")
    _common.emit_json(dict(summary, quick=bool(args.quick),
                           fusions={f: {"float_accuracy": m["float_accuracy"],
                                        "train_seconds": m["train_seconds"],
                                        "reports": m["reports"],
                                        "distill": m["distill"]}
                                    for f, m in everything.items()}))


if __name__ == "__main__":
    main()
