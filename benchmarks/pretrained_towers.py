"""Pretrained towers: keras_mm's keras-hub text tower against keras-hub.

A BERT preset with the configuration of keras-hub's `bert_small_en_uncased`
(4 layers, hidden 512, 8 heads, MLP 2048; random weights, a generated
WordPiece vocabulary of 30,522 tokens) is written with `save_to_preset`
into a temporary folder. Then, in one process:

- train_ratio: training throughput (examples/s of `model.fit` on token ids
  of length 128, batch 32, Adam) of a keras_mm model (the `preset:` input's
  TextPresetTower with `pooling: pooled`, a 2-class classification head)
  against keras-hub's own `BertTextClassifier` with the same backbone
  config, on the same tokens. Both networks are the backbone plus one
  Dense; the sides alternate (`--rounds`, each timing `--steps` steps
  after a warm-up epoch) and the ratio is the median of the per-round
  ratios. Target >= 0.97.
- serve_ratio: p50 latency at batch 1 of the exported SavedModel's
  `serving_default` on raw strings (tokenizer inside the graph) against
  keras-hub's `TextClassifier.predict` on the same strings. Target <= 0.25.
- export_mb: the size of the exported version folder; verify_s: the
  verifier's time (a fresh process that imports tensorflow and
  tensorflow_text only).

Usage:
    python benchmarks/pretrained_towers.py            # full (~15 min, 2 cores)
    python benchmarks/pretrained_towers.py --quick    # smoke run: a 2-layer,
                                                      # hidden-128 BERT
"""

import os
import shutil
import statistics
import tempfile
import time

import _common

SMALL = {"num_layers": 4, "num_heads": 8, "hidden_dim": 512,
         "intermediate_dim": 2048}
QUICK = {"num_layers": 2, "num_heads": 2, "hidden_dim": 128,
         "intermediate_dim": 256}
VOCABULARY_SIZE = 30522
SEQUENCE_LENGTH = 128
BATCH = 32


def parse_args():
    p = _common.make_parser(__doc__)
    p.add_argument("--rounds", type=int, default=None,
                   help="paired training rounds (default 5, quick 2)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps timed per side and round (default "
                        "20, quick 4)")
    p.add_argument("--requests", type=int, default=None,
                   help="batch-1 requests timed per side (default 100, "
                        "quick 20)")
    return p.parse_args()


def vocabulary(size):
    """`[PAD] [UNK] [CLS] [SEP] [MASK]`, then generated words and pieces."""
    words = [f"w{i}" for i in range((size - 5) // 2)]
    pieces = [f"##p{i}" for i in range(size - 5 - len(words))]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + pieces


def sentences(rng, vocab, n):
    words = [w for w in vocab[5:] if not w.startswith("##")]
    return [" ".join(rng.choice(words, size=rng.integers(40, 120)))
            for _ in range(n)]


def write_preset(folder, config):
    import keras_hub

    vocab = vocabulary(VOCABULARY_SIZE)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), max_sequence_length=512, **config)
    task = keras_hub.models.BertTextClassifier(
        backbone=backbone, preprocessor=preprocessor, num_classes=2)
    task.save_to_preset(folder)
    return vocab


def keras_mm_model(preset):
    import keras

    import keras_mm

    spec = {"name": "bert_small",
            "inputs": {"text": {"modality": "text", "preset": preset,
                                "shape": [SEQUENCE_LENGTH],
                                "tower": {"pooling": "pooled"}}},
            "fusion": None,
            "heads": {"label": {"type": "classification", "num_classes": 2,
                                "class_names": ["a", "b"]}}}
    model = keras_mm.build_model(spec)
    keras_mm.compile_model(model, optimizer=keras.optimizers.Adam(1e-4),
                           jit_compile=False)
    return model


def keras_hub_model(preset):
    import keras
    import keras_hub

    task = keras_hub.models.BertTextClassifier.from_preset(
        preset, num_classes=2, preprocessor=None)
    task.compile(optimizer=keras.optimizers.Adam(1e-4),
                 loss=keras.losses.SparseCategoricalCrossentropy(
                     from_logits=True), jit_compile=False)
    return task


def main():
    args = parse_args()
    quick = args.quick
    tf = _common.configure_tensorflow(args.threads)
    import keras_hub
    import numpy as np

    from keras_mm.pretrained.text_preset_preprocessor import (
        TextPresetPreprocessor)
    from keras_mm.serving import export
    from keras_mm.training.finished_run import verify_report

    config = QUICK if quick else SMALL
    rounds = args.rounds or (2 if quick else 5)
    steps = args.steps or (4 if quick else 20)
    requests = args.requests or (20 if quick else 100)
    _common.print_header(
        "Pretrained towers: keras_mm TextPresetTower vs keras-hub "
        "BertTextClassifier", args,
        [f"BERT config {config}, vocabulary {VOCABULARY_SIZE}, sequence "
         f"length {SEQUENCE_LENGTH}, batch {BATCH}; {rounds} paired rounds "
         f"of {steps} training steps; {requests} batch-1 requests"])
    rng = np.random.default_rng(0)
    args.cache.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="pretrained_towers_", dir=str(args.cache))
    try:
        preset = os.path.join(work, "bert_small")
        vocab = write_preset(preset, config)
        pre = TextPresetPreprocessor("text", preset,
                                     max_len=SEQUENCE_LENGTH)
        texts = sentences(rng, vocab, BATCH * steps)
        batch = pre(tf.constant(texts))
        ids = batch["text"].numpy()
        mask = batch["text_mask"].numpy()
        labels = rng.integers(0, 2, size=len(texts))

        ours = keras_mm_model(preset)
        theirs = keras_hub_model(preset)
        ours_x = {"text": ids, "text_mask": mask}
        theirs_x = {"token_ids": ids, "padding_mask": mask,
                    "segment_ids": np.zeros_like(ids)}

        def fit_eps(model, x, y):
            start = time.perf_counter()
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                      shuffle=False)
            return len(labels) / (time.perf_counter() - start)

        fit_eps(ours, ours_x, {"label": labels})         # warm-up (tracing)
        fit_eps(theirs, theirs_x, labels)
        ratios, ours_eps, theirs_eps = [], [], []
        for _ in range(rounds):
            a = fit_eps(ours, ours_x, {"label": labels})
            b = fit_eps(theirs, theirs_x, labels)
            ours_eps.append(a)
            theirs_eps.append(b)
            ratios.append(a / b)

        # Serving: the export (tokenizer inside) vs TextClassifier.predict.
        base = os.path.join(work, "saved")
        with _common.Timer() as t_export:
            path = export(ours, {"text": pre}, "bert_small", base_dir=base,
                          golden_examples=[{"text": t} for t in texts[:4]])
        report = verify_report(path)
        export_mb = sum(os.path.getsize(os.path.join(d, f))
                        for d, _, files in os.walk(path)
                        for f in files) / 2**20
        serve = tf.saved_model.load(path).signatures["serving_default"]
        predictor = keras_hub.models.TextClassifier.from_preset(
            preset, num_classes=2)
        predictor.set_weights(theirs.get_weights())
        singles = texts[:requests]
        warm = min(5, requests)
        sm_ms = _common.time_calls(
            lambda t: serve(text=tf.constant([t])), singles, warm)
        hub_ms = _common.time_calls(
            lambda t: predictor.predict([t], verbose=0), singles, warm)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "train_ratio": statistics.median(ratios),
        "train_ratios": ratios,
        "keras_mm_train_eps": statistics.median(ours_eps),
        "keras_hub_train_eps": statistics.median(theirs_eps),
        "savedmodel_p50_ms": statistics.median(sm_ms),
        "keras_hub_predict_p50_ms": statistics.median(hub_ms),
        "export_mb": export_mb,
        "verify_s": report.get("seconds"),
        "export_s": t_export.seconds,
    }
    result["serve_ratio"] = (result["savedmodel_p50_ms"]
                             / result["keras_hub_predict_p50_ms"])
    print(_common.markdown_table(
        ["figure", "value", "target"],
        [["train_ratio (keras_mm / keras-hub examples/s)",
          f"{result['train_ratio']:.3f}", ">= 0.97"],
         ["keras_mm / keras-hub training examples/s",
          f"{result['keras_mm_train_eps']:.1f} / "
          f"{result['keras_hub_train_eps']:.1f}", ""],
         ["serve_ratio (SavedModel p50 / TextClassifier.predict p50)",
          f"{result['serve_ratio']:.3f}", "<= 0.25"],
         ["SavedModel / predict p50 ms",
          f"{result['savedmodel_p50_ms']:.2f} / "
          f"{result['keras_hub_predict_p50_ms']:.2f}", ""],
         ["export_mb", f"{export_mb:.1f}", ""],
         ["verify_s", f"{result['verify_s']}", ""]]))
    _common.emit_json(result)


if __name__ == "__main__":
    main()
