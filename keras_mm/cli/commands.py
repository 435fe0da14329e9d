"""The bodies of the `keras-mm` subcommands.

Each takes the parsed `argparse.Namespace`, calls one library function and
prints its result; exit status is 0 unless a function returns an int.
"""

import json


def _print_json(data):
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def init(args):
    from keras_mm.inference import copy_example, init_recipe

    if args.example is not None:
        if args.data is not None:
            raise ValueError("give DATA or --example NAME, not both")
        path = copy_example(args.example, out=args.out, force=args.force)
        print(f"recipe written to {path}; train it with: keras-mm train "
              f"{_shown(path)}")
        return 0
    if args.data is None:
        raise ValueError("give DATA (a manifest or a folder of class "
                         "subfolders), or --example NAME")
    result = init_recipe(args.data, out=args.out, name=args.name,
                         label=args.label, sample=args.sample,
                         seed=args.seed, force=args.force)
    print(result["text"], end="")
    for split, path in result["manifests"].items():
        print(f"{split} manifest written to {_shown(path)}")
    print(f"recipe written to {_shown(result['recipe_path'])}; train it "
          f"with: keras-mm train {_shown(result['recipe_path'])}")
    return 0


def _shown(path):
    import os
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def train(args):
    from keras_mm.training import train as train_fn

    result = train_fn(args.recipe, overrides=args.overrides,
                      export=not args.no_export,
                      verify=not args.no_verify, runs_dir=args.runs_dir,
                      overwrite=getattr(args, "overwrite", False))
    # The trainer has said "exported to <path>" (printed once).
    print(f"run folder: {result.run_dir}")
    if result.verify_report is not None and not result.verify_report["ok"]:
        _print_json(result.verify_report)
        return 1
    return 0


def evaluate(args):
    from keras_mm.training import evaluate as evaluate_fn

    if getattr(args, "robustness", False):
        from keras_mm.evaluation.robustness import (format_table,
                                                    robustness_report)
        splits = args.splits or ["test"]
        if len(splits) != 1:
            raise SystemExit("error: --robustness takes one --split "
                             f"(got {', '.join(splits)})")
        report = robustness_report(args.run_dir, split=splits[0],
                                   levels=args.levels, seed=args.seed)
        print(format_table(report))
        print(f"robustness report written to {_shown(report['path'])}")
        return 0
    metrics = evaluate_fn(args.run_dir, splits=tuple(args.splits or
                                                     ("test",)))
    _print_json(metrics)


def explain(args):
    from keras_mm.evaluation.explain import explain_run

    report = explain_run(args.run_dir, examples=args.examples,
                         split=args.split, seed=args.seed, head=args.head,
                         steps=args.steps)
    for entry in report.get("heads", {report["head"]: report}).values():
        print(f"head {entry['head']} ({entry['head_type']}; score: "
              f"{entry['score']}), split {entry['split']}, "
              f"{entry['num_examples']} examples")
        for ex in entry["examples"]:
            shares = " ".join(f"{m}={v:+.4f}"
                              for m, v in ex["shapley"].items())
            print(f"  #{ex['key']}: label {ex['label']}, predicted "
                  f"{ex['predicted']}, full {ex['full']:.4f}, empty "
                  f"{ex['empty']:.4f}, shapley {shares}")
        for cls, values in entry["per_class"].items():
            means = " ".join(f"{m}={v:+.4f}" for m, v in values.items())
            print(f"  mean over {cls}: {means}")
    print(f"attribution written to {_shown(report['path'])}")
    for path in report["plots"]:
        print(f"plot: {_shown(path)}")


def embed(args):
    from keras_mm.evaluation.embeddings import embed_run

    info = embed_run(args.run_dir, split=args.split, out=args.out,
                     head=args.head)
    print(f"{info['count']} examples of split {info['split']} embedded "
          f"({', '.join(info['inputs'])}; dimension {info['embedding_dim']})"
          f" into {_shown(info['path'])}")


def export(args):
    options = dict(name=args.name, base_dir=args.base_dir,
                   version=args.version,
                   allow_untrained=args.allow_untrained or None)
    if args.quantize == "none" and args.format == "savedmodel":
        from keras_mm.training import export_run

        path = export_run(args.run_dir, verify=not args.no_verify, **options)
    else:
        from keras_mm.compression.compressed_export import export_compressed
        from keras_mm.compression.parity import format_report

        from keras_mm.errors import ExportError

        try:
            path, report = export_compressed(
                args.run_dir, args.quantize, args.format,
                verify=not args.no_verify,
                max_metric_drop=args.max_metric_drop, **options)
        except ExportError as error:    # a refusal: its report, then why
            if getattr(error, "report", None) is not None:
                print(format_report(error.report))
            raise
        print(format_report(report))
    print(f"exported: {path}")


def check(args):
    from keras_mm.tpu.recipe_check import check_recipe

    report = check_recipe(args.recipe, tpu=args.tpu,
                          overrides=args.overrides)
    print(report.table())
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report.as_dict(), f, indent=1)
    return report.exit_code


def tune(args):
    from keras_mm.tuning import tune as tune_fn

    overrides = list(args.overrides)
    for flag, key in (("max_trials", "max_trials"),
                      ("max_minutes", "max_minutes"),
                      ("algorithm", "algorithm"), ("folder", "folder")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"tune.{key}={json.dumps(value)}")
    result = tune_fn(args.recipe, overrides=overrides,
                     runs_dir=args.runs_dir, overwrite=args.overwrite)
    # The tuner has printed a line per trial and the table.
    if result.best is None:
        print(f"no trial finished; see {_shown(result.folder)}")
        return 1
    print(f"best: trial {result.best['trial']}, val {result.objective} "
          f"{result.best['score']:.4f}; train it: keras-mm train "
          f"{_shown(result.best_recipe)}")
    return 0


def verify(args):
    from keras_mm.serving import verify as verify_fn

    report = verify_fn(args.path, timeout=args.timeout)
    _print_json(report)
    return 0 if report["ok"] else 1


def _parse_inputs(args):
    """`(values by input name, values by modality)` of the predict flags:
    `--image` ... `--sensor` and `--text(-file)` name a modality (the
    model's one input of that kind), `--input NAME=VALUE` an input."""
    modalities = {}
    for name in ("image", "audio", "text", "video", "sensor"):
        value = getattr(args, name)
        if value is not None:
            modalities[name] = value
    text_file = getattr(args, "text_file", None)
    if text_file is not None:
        if "text" in modalities:
            raise ValueError("give --text or --text-file, not both")
        modalities["text"] = _read_text_file(text_file)
    values = {}
    for item in args.inputs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--input {item!r}: write NAME=VALUE, e.g. "
                             "--input caption='a red square'")
        values[name] = value
    if not values and not modalities:
        raise ValueError("give at least one input, e.g. --image a.png")
    return values, modalities


def _read_text_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"--text-file {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--text-file {path}: not UTF-8 text (byte "
                         f"{e.start}); save it as UTF-8") from None


def predict(args):
    from keras_mm.serving import predict as predict_fn

    values, modalities = _parse_inputs(args)
    _print_json(predict_fn(args.path, values, modalities=modalities))


def data_demo(args):
    from keras_mm.datasets import make_demo_dataset

    info = make_demo_dataset(args.out, seed=args.seed,
                             overwrite=args.overwrite)
    sizes = ", ".join(f"{n} {k}" for k, n in info["sizes"].items())
    print(f"demo set written to {info['out_dir']} ({sizes})")


def data_av_mnist(args):
    from keras_mm.datasets import build_av_mnist

    path = build_av_mnist(args.mnist, args.fsdd, args.out,
                          variant=args.variant, seed=args.seed,
                          limit=args.limit, overwrite=args.overwrite)
    print(f"AV-MNIST ({args.variant}) written to {path}")


def data_basicmotions(args):
    from keras_mm.datasets import build_basicmotions
    from keras_mm.datasets.ts_dataset import describe

    # The `data ts` converter, with the 6 dimensions split in two inputs.
    info = build_basicmotions(args.ts, args.out, file_format=args.format,
                              overwrite=args.overwrite)
    print(describe(info))


def _ts_inputs(specs):
    from keras_mm.errors import ConfigError

    inputs = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            inputs[name.strip()] = [int(d) for d in dims.split(",")]
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError("--input", f"{spec!r} is not NAME=DIMS, e.g. "
                              "acc=0,1,2 (0-based .ts dimensions)")
    return inputs or None


def data_ts(args):
    from keras_mm.datasets.ts_dataset import build_ts_dataset, describe

    info = build_ts_dataset(
        args.source, args.out, search_dir=args.search_dir,
        problem=args.problem, inputs=_ts_inputs(args.inputs),
        file_format=args.format, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed,
        overwrite=args.overwrite)
    print(describe(info))


def data_convert(args):
    from keras_mm.data.manifest import Manifest
    from keras_mm.data.tfrecords import convert_manifest_to_tfrecords

    manifest = Manifest.read(args.manifest)
    result = convert_manifest_to_tfrecords(
        manifest, args.out_dir, args.shards,
        file_columns=tuple(args.file_columns), num_workers=args.workers,
        overwrite=args.overwrite,
        allow_paths_outside=getattr(args, "allow_paths_outside", False))
    print(f"TFRecord shards in {args.out_dir}")
    if result is not None:
        _print_json(result)


def data_inspect(args):
    from keras_mm.data.inspection import inspect_source

    _print_json(inspect_source(args.path, rows=args.rows,
                               label=getattr(args, "label", None),
                               sample=getattr(args, "sample", 64)))
