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
import sys

from keras_mm.cli import commands


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train, evaluate, export and verify a recipe",
        description="Train the model of a YAML recipe (generating its data "
                    "when the recipe says how), evaluate it, export it to "
                    "saved_models/<name>/<version> and verify the export.")
    p.add_argument("recipe", help="recipe file, e.g. recipes/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY.PATH=VALUE",
                   help="override a recipe key (repeatable), e.g. "
                        "--set training.epochs=3")
    p.add_argument("--runs-dir", help="where runs/<name>/ goes")
    p.add_argument("--no-export", action="store_true",
                   help="skip the export (and its verification)")
    p.add_argument("--no-verify", action="store_true",
                   help="export without verifying")
    p.set_defaults(func=commands.train)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a finished run",
                       description="Evaluate the best checkpoint of a run "
                                   "folder on one or more splits.")
    p.add_argument("run_dir", help="a run folder, e.g. runs/demo")
    p.add_argument("--split", dest="splits", action="append",
                   help="split to evaluate (repeatable; default test)")
    p.set_defaults(func=commands.evaluate)


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
                                   "its inputs; the others are sent empty.")
    p.add_argument("path", help="a version folder")
    p.add_argument("--image", help="image file (input 'image')")
    p.add_argument("--audio", help="WAV file (input 'audio')")
    p.add_argument("--text", help="text (input 'text'), sent as given "
                                  "even where it names a file")
    p.add_argument("--text-file", metavar="PATH",
                   help="UTF-8 file whose contents are the text (input "
                        "'text')")
    p.add_argument("--video", nargs="+", help="frame files (input 'video')")
    p.add_argument("--sensor", help=".csv or .npy file (input 'sensor')")
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

    d = data.add_parser("inspect", help="summarise a manifest or TFRecords")
    d.add_argument("path", help="manifest file, or TFRecord file/folder/glob")
    d.add_argument("--rows", type=int, default=3,
                   help="example rows to show")
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
    for add in (_add_train, _add_evaluate, _add_export, _add_verify,
                _add_predict, _add_data):
        add(sub)
    return parser


def _version():
    from keras_mm.version import __version__
    return __version__


def configure_logging(debug):
    """keras_mm's log records on stderr: INFO, or DEBUG with --debug."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(message)s")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
