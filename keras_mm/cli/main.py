"""The `keras-mm` command line: thin commands over importable functions.

Each subcommand parses its arguments and calls one function of the
library (`keras_mm.training.train`, `keras_mm.serving.verify`, ...), as
spaCy's CLI does. Errors print one line and exit non-zero; `--debug`
shows the traceback.
"""

import argparse
import json
import logging
import os
import re
import sys
import tempfile

from keras_mm.cli import commands


def _add_overrides(parser, example):
    parser.add_argument("--set", dest="overrides", action="append",
                        default=[], metavar="KEY.PATH=VALUE",
                        help="override a recipe key (repeatable), e.g. "
                             f"--set {example}")


def _add_init(sub):
    from keras_mm.inference import example_names

    names = ", ".join(example_names())
    p = sub.add_parser(
        "init", help="write a recipe inferred from a folder or a manifest",
        description="Infer a recipe from DATA: a CSV/JSONL manifest (each "
                    "column's modality from its content) or a folder of "
                    "class subfolders (the manifests are written too, next "
                    "to the recipe). Prints what was inferred and the "
                    "recipe; then run `keras-mm train RECIPE`. With "
                    f"--example NAME, copy a shipped recipe ({names}).")
    p.add_argument("data", nargs="?", metavar="DATA",
                   help="manifest file (.csv/.tsv/.jsonl) or folder")
    p.add_argument("--example", metavar="NAME",
                   help=f"copy a shipped recipe instead: {names}")
    p.add_argument("--label", help="the label column (default: the column "
                                   "named label/labels/target/class/y)")
    p.add_argument("--out", help="recipe file to write (default "
                                 "<name>.yaml here)")
    p.add_argument("--name", help="recipe, run and export name (default "
                                  "from DATA)")
    p.add_argument("--sample", type=int, default=64,
                   help="files read per column to infer sizes (default 64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the splits made and of training")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing recipe / manifests")
    p.set_defaults(func=commands.init)


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train, evaluate, export and verify a recipe",
        description="Train the model of a YAML recipe (generating its data "
                    "when the recipe says how), evaluate it, export it to "
                    "saved_models/<name>/<version> and verify the export.")
    p.add_argument("recipe", help="recipe file, e.g. recipes/demo.yaml")
    _add_overrides(p, "training.epochs=3")
    p.add_argument("--runs-dir", help="where runs/<name>/ goes")
    p.add_argument("--no-export", action="store_true",
                   help="skip the export (and its verification)")
    p.add_argument("--no-verify", action="store_true",
                   help="export without verifying")
    p.add_argument("--overwrite", action="store_true",
                   help="train again into the folder of a finished run "
                        "(refused otherwise; or rename it: --set name=...)")
    p.set_defaults(func=commands.train)


def _add_check(sub):
    p = sub.add_parser(
        "check", help="check that a recipe's model compiles for TPU (XLA)",
        description="Build a recipe's model and one batch of its training "
                    "pipeline, compile the train and predict steps with "
                    "XLA (on CPU) and report: a. Keras kept jit_compile, b. "
                    "ops XLA rejects, c. float64 / dynamic shapes in the "
                    "HLO, d. jit against plain outputs, e. batch and shape "
                    "advice, f. the pipeline's static shapes. Exits 1 when a "
                    "or b fails.")
    p.add_argument("recipe", help="recipe file, e.g. recipes/demo.yaml")
    p.add_argument("--tpu", action="store_true",
                   help="check as on a TPU: bfloat16, steps_per_execution "
                        "32, the advice for 8 cores")
    _add_overrides(p, "training.batch_size=64")
    p.add_argument("--json", dest="json_out",
                   help="also write the report as JSON to this file")
    p.set_defaults(func=commands.check)


def _add_tune(sub):
    p = sub.add_parser(
        "tune", help="search a recipe's tune: space with KerasTuner",
        description="Train one run per trial of the recipe's tune: section "
                    "(key paths -> search spaces), select on the val split "
                    "(held out of train when the recipe has none), and "
                    "write trials.csv, trials.png and best.yaml (the best "
                    "trial's recipe, for `keras-mm train`) into "
                    "<runs_dir>/<name>_tune. The same command resumes a "
                    "killed search without repeating finished trials.")
    p.add_argument("recipe", help="recipe file with a tune: section")
    _add_overrides(p, "tune.max_trials=20")
    p.add_argument("--max-trials", type=int, help="tune.max_trials")
    p.add_argument("--max-minutes", type=float, help="tune.max_minutes")
    p.add_argument("--algorithm", choices=("random", "bayesian",
                                           "hyperband"),
                   help="tune.algorithm")
    p.add_argument("--folder", help="the search's folder (tune.folder)")
    p.add_argument("--runs-dir", help="parent of the default folder "
                                      "(training.runs_dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a folder that holds a search")
    p.set_defaults(func=commands.tune)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a finished run",
                       description="Evaluate the best checkpoint of a run "
                                   "folder on one or more splits.")
    p.add_argument("run_dir", help="a run folder, e.g. runs/demo")
    p.add_argument("--split", dest="splits", action="append",
                   help="split to evaluate (repeatable; default test)")
    p.add_argument("--robustness", action="store_true",
                   help="write robustness.json and robustness_*.png: the "
                        "metric with modalities removed and under noise")
    p.add_argument("--levels", type=int, default=5,
                   help="noise levels per modality (--robustness; "
                        "default 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise (--robustness; default 0)")
    p.set_defaults(func=commands.evaluate)


def _add_explain(sub):
    p = sub.add_parser(
        "explain", help="attribute a run's predictions to its modalities",
        description="Explain a finished run's predictions on one split: "
                    "exact Shapley values of the modalities (every example; "
                    "mean per class), integrated gradients within each "
                    "modality (per-token occlusion for text) and the fusion "
                    "layer's gates / weights / attention for the first N "
                    "examples. Writes attribution.json, "
                    "attribution_arrays.npz and PNG panels into the run "
                    "folder.")
    p.add_argument("run_dir", help="a run folder, e.g. runs/demo")
    p.add_argument("--examples", type=int, default=8,
                   help="examples that get panels (default 8)")
    p.add_argument("--split", default="test",
                   help="split to explain (default test)")
    p.add_argument("--head", help="one head to explain (default: every "
                                  "classification/binary/regression head)")
    p.add_argument("--steps", type=int, default=32,
                   help="integrated-gradients steps (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=commands.explain)


def _add_embed(sub):
    p = sub.add_parser(
        "embed", help="write a dual-encoder run's embeddings of a split",
        description="Embed every example of one split with a finished "
                    "dual-encoder run (fusion: none, a contrastive head): "
                    "<input>.npy (L2-normalised float32 [n, dim]) per "
                    "aligned input, keys.npy (the row keys) and "
                    "embeddings.json, for any vector index.")
    p.add_argument("run_dir", help="a run folder, e.g. runs/retrieval")
    p.add_argument("--split", default="test",
                   help="split to embed (default test)")
    p.add_argument("--out", help="a new folder for the files (default "
                                 "<run>/embeddings/<split>)")
    p.add_argument("--head", help="the contrastive head (default: the "
                                  "first)")
    p.set_defaults(func=commands.embed)


def _add_export(sub):
    p = sub.add_parser("export", help="export a run to a TF Serving "
                                      "SavedModel",
                       description="Export a run's best model with its "
                                   "fitted preprocessing to "
                                   "<base-dir>/<name>/<version>, verified "
                                   "and written atomically.")
    p.add_argument("run_dir", help="a run folder, e.g. runs/demo")
    p.add_argument("--name", help="served model name (default: the "
                                  "recipe's export name)")
    p.add_argument("--base-dir", help="models folder (default "
                                      "saved_models)")
    p.add_argument("--version", type=int,
                   help="integer version (default: the next free one)")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--allow-untrained", action="store_true",
                   help="export a run that never beat the trivial baseline "
                        "or whose loss went non-finite (refused by "
                        "default, unless the recipe sets "
                        "export.allow_untrained)")
    p.add_argument("--quantize", default="none",
                   choices=["none", "int8", "float8", "float16", "dynamic"],
                   help="a compressed artefact with a parity report "
                        "against float32: SavedModel int8 / float8 (the "
                        "next version), LiteRT none / float16 / dynamic / "
                        "int8 (with --format litert); refused, and nothing "
                        "written, when a head's metric drops by more than "
                        "export.max_metric_drop")
    p.add_argument("--format", default="savedmodel",
                   choices=["savedmodel", "litert"],
                   help="litert: <base-dir>/<name>_litert/<version>/ with "
                        "model.tflite on the preprocessed inputs and "
                        "preprocessing.json")
    p.add_argument("--max-metric-drop", type=float,
                   help="largest accuracy drop in points (default "
                        "export.max_metric_drop, 1)")
    p.set_defaults(func=commands.export)


def _add_verify(sub):
    p = sub.add_parser("verify", help="verify an exported SavedModel",
                       description="Load a SavedModel in a fresh Python "
                                   "(tensorflow + tensorflow_text only), "
                                   "audit its ops, replay its golden "
                                   "requests and send malformed ones. "
                                   "Prints a JSON report.")
    p.add_argument("path", help="a version folder, e.g. "
                                "saved_models/demo/1")
    p.add_argument("--timeout", type=int, default=600,
                   help="seconds before a hanging verifier fails")
    p.set_defaults(func=commands.verify)


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict with an exported model",
                       description="Run one example through a SavedModel's "
                                   "serving signature. Give any subset of "
                                   "its inputs; the others are sent empty. "
                                   "--image/--audio/--text/--video/--sensor "
                                   "go to the model's one input of that "
                                   "modality, whatever its name; --input "
                                   "NAME=VALUE names the input.")
    p.add_argument("path", help="a version folder")
    p.add_argument("--image", help="image file, for the model's image input")
    p.add_argument("--audio", help="WAV file, for the model's audio input")
    p.add_argument("--text", help="text for the model's text input, sent as "
                                  "given even where it names a file")
    p.add_argument("--text-file", metavar="PATH",
                   help="UTF-8 file whose contents are the text")
    p.add_argument("--video", nargs="+",
                   help="frame files or a GIF, for the model's video input")
    p.add_argument("--sensor",
                   help=".csv or .npy file, for the model's sensor input")
    p.add_argument("--input", dest="inputs", action="append", default=[],
                   metavar="NAME=VALUE",
                   help="any input by name: a file path, or text / a "
                        "table cell (sent as given) (repeatable)")
    p.set_defaults(func=commands.predict)


def _add_data(sub):
    p = sub.add_parser("data", help="build, convert and inspect data sets")
    data = p.add_subparsers(dest="data_command", metavar="COMMAND")
    data.required = True

    d = data.add_parser("demo", help="write the embedded demo set")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=commands.data_demo)

    d = data.add_parser("av-mnist", help="build AV-MNIST from MNIST + FSDD")
    d.add_argument("--mnist", required=True, help="MNIST IDX folder")
    d.add_argument("--fsdd", required=True, help="FSDD folder")
    d.add_argument("--out", required=True)
    d.add_argument("--variant", choices=("clean", "degraded"),
                   default="clean")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--limit", type=int)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=commands.data_av_mnist)

    d = data.add_parser("basicmotions",
                        help="build BasicMotions manifests from .ts files")
    d.add_argument("--ts", required=True, help="folder of the .ts files")
    d.add_argument("--out", required=True)
    d.add_argument("--format", choices=("npy", "csv"), default="npy")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=commands.data_basicmotions)

    d = data.add_parser(
        "ts", help="convert any UEA/UCR .ts problem to manifests + arrays")
    d.add_argument("source", metavar="PATH_OR_PROBLEM",
                   help="a .ts file, a folder with <Problem>_TRAIN.ts / "
                        "_TEST.ts, or a problem name (see --search-dir)")
    d.add_argument("--out", required=True)
    d.add_argument("--search-dir", help="where a problem name is looked up "
                                        "(default: the current folder)")
    d.add_argument("--problem", help="the problem, in a folder of several")
    d.add_argument("--format", choices=("npy", "csv"), default="npy")
    d.add_argument("--input", dest="inputs", action="append", default=[],
                   metavar="NAME=DIMS", help="an input made of some "
                   "dimensions, e.g. acc=0,1,2 (repeatable; default: one "
                   "input 'series' with every dimension)")
    d.add_argument("--val-fraction", type=float, default=0.0,
                   help="training examples moved to val.csv (seeded, "
                        "stratified)")
    d.add_argument("--test-fraction", type=float, default=0.2,
                   help="test part of a single .ts file without a TEST file")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=commands.data_ts)

    d = data.add_parser("convert",
                        help="convert a manifest to TFRecord shards")
    d.add_argument("manifest")
    d.add_argument("out_dir")
    d.add_argument("--shards", type=int, default=8)
    d.add_argument("--file-column", dest="file_columns", action="append",
                   default=[], help="column holding file paths whose bytes "
                                    "go into the records (repeatable)")
    d.add_argument("--workers", type=int)
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--allow-paths-outside", action="store_true",
                   help="embed files whose paths resolve outside the "
                        "manifest's folder (refused by default)")
    d.set_defaults(func=commands.data_convert)

    d = data.add_parser(
        "inspect", help="summarise a manifest, a folder or TFRecords",
        description="Summarise a manifest or TFRecords; for a manifest or a "
                    "folder of class subfolders also show what `keras-mm "
                    "init` would infer (column -> modality, shapes, lengths, "
                    "label), writing nothing. Prints JSON.")
    d.add_argument("path", help="manifest file, folder of class subfolders, "
                                "or TFRecord file/folder/glob")
    d.add_argument("--rows", type=int, default=3,
                   help="example rows to show")
    d.add_argument("--label", help="the label column (as for init)")
    d.add_argument("--sample", type=int, default=64,
                   help="files read per column to infer sizes")
    d.set_defaults(func=commands.data_inspect)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mm",
        description="keras_mm: multimodal Keras models from recipes to TF "
                    "Serving.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks")
    parser.add_argument("--version", action="version",
                        version=f"keras-mm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_init, _add_train, _add_evaluate, _add_export,
                _add_verify, _add_predict, _add_data, _add_explain,
                _add_embed, _add_check, _add_tune):
        add(sub)
    return parser


def _version():
    from keras_mm.version import __version__
    return __version__


def configure_logging(debug):
    """keras_mm's log records on stderr: INFO, or DEBUG with --debug.

    TensorFlow's Python log shows WARNING and above only (its INFO records,
    e.g. "Assets written to: <temporary folder>", came out twice: through
    its own handler and through this one), everything with --debug.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(message)s")
    logging.getLogger("tensorflow").setLevel(
        logging.DEBUG if debug else logging.WARNING)


# TensorFlow's start-up lines on stderr, printed by its C++ logging before
# TF_CPP_MIN_LOG_LEVEL is read (so that variable does not hide them): the
# absl pre-init notice, the oneDNN notice, "Could not find cuda drivers",
# the CPU-instructions note, cuInit failures on machines without a GPU.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\).*"
    r"|I\d{4} .*"
    r"|To enable the following instructions:.*rebuild TensorFlow.*"
    r"|[EW]\d{4} .*(cuInit|cuda_executor|cuda_diagnostics|CUDA_ERROR).*)$")


def import_tensorflow_quietly():
    """Imports TensorFlow (and starts its device platforms) with the
    start-up noise kept off stderr.

    File descriptor 2 goes to a temporary file during the import; the
    lines that are not start-up noise (`_STARTUP_NOISE`) are written back
    to stderr, so a real warning or error still shows.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            # The GPU platform's start-up (cuInit) logs on first use.
            tensorflow.config.list_physical_devices("GPU")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
    kept = [line for line in lines if not _STARTUP_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        # TensorFlow's C++ log off (errors still reach the user as Python
        # exceptions): its runtime notices ("oneDNN supports DT_BOOL only
        # on platforms with AVX-512", at ERROR level) are not for users.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import_tensorflow_quietly()
    configure_logging(args.debug)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("keras-mm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        message = str(e).strip() or type(e).__name__
        first, _, rest = message.partition("\n")
        print(f"keras-mm {args.command}: error: {first}", file=sys.stderr)
        if rest and getattr(e, "report", None) is None and len(rest) < 4000 \
                and rest.lstrip().startswith("{"):
            print(rest, file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    return 0


def print_json(data):
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
