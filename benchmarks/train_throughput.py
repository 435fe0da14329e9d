"""Training throughput: a keras_mm model against the same model in plain Keras.

The AV-MNIST concat model of `accuracy_av_mnist.py`, built by
`keras_mm.build_model` and compiled by `keras_mm.compile_model`, is timed
against the same architecture written by hand with plain `keras.layers`
(the same Conv2D / BatchNormalization / MaxPooling2D / Dense / Dropout
layers in the same order, the same concatenation with the two presence
columns (the presence input, all ones), the same trunk and softmax head,
the same loss and accuracy metric). The plain model gets the toolkit
model's initial weights (copied layer by layer; the script checks that both give the same predictions
before timing), and both train on the same batches, held in memory as one
cached `tf.data.Dataset` (AV-MNIST clean, preprocessed by the toolkit's
preprocessors), without shuffling, with the same optimizer settings.

Protocol: for `jit_compile=False` and then `jit_compile=True`, each model
gets a warm-up `fit` (graph tracing, XLA compilation), then `--repeats`
timed `fit` calls of `--steps` steps each, interleaved (A B B A ...) so
that load drifts hit both alike. A call's steps/second runs from the end
of its sixth step to the end of its last (a callback's timestamps: the
iterator set-up and teardown, which at random pause 0.4-2 s, are left
out). Steps/second is the median over repeats; the ratio is the median of
the paired ratios toolkit / plain.

Last line: `{"toolkit_sps", "plain_keras_sps", "ratio", "xla_speedup"}`
(without XLA; `xla_speedup` = toolkit steps/s with XLA / without; `ratios`
the per-repeat paired ratios the median is taken of), plus the
same figures with XLA.

Usage:
    python benchmarks/train_throughput.py           # full (a few minutes)
    python benchmarks/train_throughput.py --quick   # smoke run
"""

import statistics
import sys
import time

import _common
from accuracy_av_mnist import AUDIO_TOWER, IMAGE_TOWER, fusion_spec

QUICK = {"limit": 256, "steps": 8, "repeats": 2}
SETTLE_STEPS = 5


def _conv_blocks(x, encoder, prefix, pairs):
    """Plain-Keras conv blocks of a keras_mm cnn encoder (a tower's
    `image_encoder` or `audio_encoder`): 3x3 conv -> [batch norm] -> ReLU
    -> 2x2 max pool (batch norm and conv bias as the encoder has them)."""
    import keras
    norms = getattr(encoder, "norms", None) or [None] * len(encoder.convs)
    for i, (conv, norm) in enumerate(zip(encoder.convs, norms)):
        plain_conv = keras.layers.Conv2D(
            encoder.filters[i], encoder.kernel_size, padding="same",
            use_bias=conv.use_bias, name=f"{prefix}_conv{i}")
        x = plain_conv(x)
        pairs.append((plain_conv, conv))
        if norm is not None:
            plain_norm = keras.layers.BatchNormalization(
                momentum=norm.momentum, epsilon=norm.epsilon,
                name=f"{prefix}_norm{i}")
            x = plain_norm(x)
            pairs.append((plain_norm, norm))
        x = keras.layers.ReLU(name=f"{prefix}_relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same",
                                      name=f"{prefix}_pool{i}")(x)
    return x


def plain_keras_model(toolkit):
    """The concat model `toolkit` (from `keras_mm.build_model`), written
    with plain keras.layers.

    The layer choices follow the keras_mm towers' documented structure; the
    toolkit layers are only consulted for their sizes and options. Returns
    (model, [(plain layer, keras_mm layer)...]) for the weight copy.
    """
    import keras

    import keras_mm
    spec = keras_mm.model_spec(toolkit)
    pairs = []

    # ImageTower(encoder="cnn", output="vector"): conv blocks, a dense
    # projection of the feature map, dropout, the mean over positions.
    tower = toolkit.get_layer("image_tower")
    image = keras.Input(tuple(spec["inputs"]["image"]["shape"]), name="image")
    x = _conv_blocks(image, tower.image_encoder, "image", pairs)
    proj = keras.layers.Dense(tower.dim, name="image_projection")
    pairs.append((proj, tower.projection))
    x = keras.layers.Dropout(tower.dropout)(proj(x))
    image_vec = keras.layers.GlobalAveragePooling2D()(x)

    # AudioTower(encoder="cnn", frontend=None, output="vector"): per-frame
    # feature normalization, conv blocks over time x frequency, each time
    # step's features projected, dropout, the mean over time steps.
    tower = toolkit.get_layer("audio_tower")
    audio = keras.Input(tuple(spec["inputs"]["audio"]["shape"]), name="audio")
    y = audio
    source = getattr(tower, "feature_normalization", None)
    if source is not None:
        if isinstance(source, keras.layers.LayerNormalization):
            norm = keras.layers.LayerNormalization(
                epsilon=source.epsilon, name="audio_feature_norm")
        else:
            norm = keras.layers.BatchNormalization(
                momentum=source.momentum, epsilon=source.epsilon,
                name="audio_feature_norm")
        pairs.append((norm, source))
        y = norm(y)
    y = keras.layers.Reshape(tuple(y.shape[1:]) + (1,))(y)
    y = _conv_blocks(y, tower.audio_encoder, "audio", pairs)
    y = keras.layers.Reshape((y.shape[1], y.shape[2] * y.shape[3]))(y)
    proj = keras.layers.Dense(tower.dim, name="audio_projection")
    pairs.append((proj, tower.projection))
    y = keras.layers.Dropout(tower.dropout)(proj(y))
    audio_vec = keras.layers.GlobalAveragePooling1D()(y)

    # ConcatFusion: the vectors in input order, then the model's presence
    # input (one column per modality; the default with two inputs).
    presence = keras.Input((2,), name="presence")
    h = keras.layers.Concatenate()([image_vec, audio_vec, presence])
    trunk = spec["trunk"]
    for i, units in enumerate(trunk["hidden_units"]):
        dense = keras.layers.Dense(units, activation=trunk["activation"],
                                   name=f"trunk_dense{i}")
        h = keras.layers.Dropout(trunk["dropout"])(dense(h))
        pairs.append((dense, toolkit.get_layer("trunk").get_layer(
            f"trunk_dense{i}")))
    # ClassificationHead: dense logits, softmax.
    logits = keras.layers.Dense(10, name="logits")
    out = keras.layers.Softmax(name="softmax")(logits(h))
    pairs.append((logits, toolkit.get_layer("label").logits))
    model = keras.Model({"image": image, "audio": audio,
                         "presence": presence}, {"label": out},
                        name="plain_keras_concat")
    return model, pairs


def copy_weights(toolkit, plain, pairs):
    """Copies every weight of `toolkit` into `plain` (checks all are used)."""
    copied = 0
    for layer, source in pairs:
        layer.set_weights(source.get_weights())
        copied += len(source.weights)
    if copied != len(toolkit.weights) or len(plain.weights) != copied:
        raise RuntimeError(
            f"weight copy incomplete: copied {copied} of "
            f"{len(toolkit.weights)} keras_mm weights into a model of "
            f"{len(plain.weights)}")


def build_pair(spec, jit, lr):
    import keras

    import keras_mm
    _common.set_seed(0)
    toolkit = keras_mm.build_model(spec)
    plain, pairs = plain_keras_model(toolkit)
    copy_weights(toolkit, plain, pairs)
    keras_mm.compile_model(toolkit, optimizer=keras.optimizers.Adam(lr),
                           jit_compile=jit)
    plain.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss={"label": keras.losses.SparseCategoricalCrossentropy()},
        metrics={"label": [keras.metrics.SparseCategoricalAccuracy(
            name="accuracy")]},
        jit_compile=jit)
    return toolkit, plain


def check_same_outputs(toolkit, plain, batch):
    import numpy as np
    a = toolkit.predict(batch, verbose=0)["label"]
    b = plain.predict(batch, verbose=0)["label"]
    diff = float(np.max(np.abs(a - b)))
    if diff > 1e-4:
        raise RuntimeError(f"the plain Keras model differs from the keras_mm "
                           f"model (max |diff| {diff:.2e}): not the same "
                           "architecture")
    return diff


def time_fit(model, dataset, steps):
    """Steps/second of one `fit` call, from the end of step SETTLE_STEPS + 1
    to the end of its last one.

    The first steps after switching models are slower (caches), and the
    end of the call is left out: at the end of a
    `fit`, the tf.data iterator's teardown sometimes pauses 0.4-2 s, at
    random, whichever the model (seen on this machine), which would swamp
    the difference being measured.
    """
    import keras

    class StepTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    times = StepTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[times])
    done = times.times[min(SETTLE_STEPS, len(times.times) - 2):]
    return (len(done) - 1) / (done[-1] - done[0])


def main(argv=None):
    parser = _common.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150,
                        help="training steps per timed fit call")
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed fit calls per model and mode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit = args.limit or QUICK["limit"]
        args.steps = min(args.steps, QUICK["steps"])
        args.repeats = min(args.repeats, QUICK["repeats"])
    _common.require_av_mnist_sources(args)
    wall = time.perf_counter()
    import numpy as np

    tf = _common.configure_tensorflow(args.threads)
    _common.print_header(
        "Training throughput: keras_mm vs plain Keras (AV-MNIST concat)",
        args, [f"batch {args.batch_size}; {args.steps} steps per timed fit; "
               f"{args.repeats} interleaved repeats per model and mode",
               f"towers: image {IMAGE_TOWER}; audio {AUDIO_TOWER}"])
    arrays, _ = _common.load_av_mnist(args.data, args.cache, "clean",
                                      limit=args.limit)
    train = arrays["train"]
    audio_shape = train["audio"].shape[1:]
    spec = fusion_spec("concat", audio_shape)
    # Every modality present: the presence input of both models all ones.
    presence = np.ones((len(train["label"]), 2), "float32")
    dataset = (tf.data.Dataset.from_tensor_slices(
        ({"image": train["image"], "audio": train["audio"],
          "presence": presence}, {"label": train["label"]}))
        .batch(args.batch_size, drop_remainder=True).cache().repeat())
    probe = {"image": train["image"][:32], "audio": train["audio"][:32],
             "presence": presence[:32]}

    figures = {}
    for jit in (False, True):
        toolkit, plain = build_pair(spec, jit, 1e-3)
        diff = check_same_outputs(toolkit, plain, probe)
        print(f"[jit_compile={jit}] same predictions before training (max "
              f"|diff| {diff:.1e}); {_common.count_params(toolkit)} "
              "trainable parameters each", file=sys.stderr, flush=True)
        for model in (toolkit, plain):       # warm-up: tracing / XLA
            time_fit(model, dataset, max(2, args.steps // 4))
        sps = {"toolkit": [], "plain": []}
        ratios = []
        for r in range(args.repeats):
            order = ("toolkit", "plain") if r % 2 == 0 else ("plain",
                                                             "toolkit")
            got = {}
            for name in order:
                got[name] = time_fit(toolkit if name == "toolkit" else plain,
                                     dataset, args.steps)
                sps[name].append(got[name])
            ratios.append(got["toolkit"] / got["plain"])
            print(f"[jit_compile={jit}] repeat {r}: toolkit "
                  f"{got['toolkit']:.2f} steps/s, plain {got['plain']:.2f} "
                  f"steps/s", file=sys.stderr, flush=True)
        figures[jit] = {
            "toolkit_sps": statistics.median(sps["toolkit"]),
            "plain_keras_sps": statistics.median(sps["plain"]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios,
        }
        import keras
        keras.backend.clear_session()

    rows = []
    for jit in (False, True):
        f = figures[jit]
        rows.append([f"jit_compile={jit}", f"{f['toolkit_sps']:.2f}",
                     f"{f['plain_keras_sps']:.2f}",
                     f"{f['ratio']:.3f} ({f['ratio_min']:.3f}-"
                     f"{f['ratio_max']:.3f})"])
    print(_common.markdown_table(
        ["mode", "keras_mm steps/s", "plain Keras steps/s",
         "ratio keras_mm / plain (median; min-max)"], rows))
    print()
    xla_speedup = figures[True]["toolkit_sps"] / figures[False]["toolkit_sps"]
    ratio = figures[False]["ratio"]
    print(f"- ratio without XLA {ratio:.3f} (target >= 0.97): "
          f"{'met' if ratio >= 0.97 else 'MISSED'}; with XLA "
          f"{figures[True]['ratio']:.3f}")
    print(f"- XLA speed-up (keras_mm, jit_compile=True vs False): "
          f"{xla_speedup:.2f}x")
    elapsed = time.perf_counter() - wall
    print(f"- wall time {elapsed:.0f} s")
    _common.emit_json({
        "toolkit_sps": figures[False]["toolkit_sps"],
        "plain_keras_sps": figures[False]["plain_keras_sps"],
        "ratio": ratio,
        "ratios": figures[False]["ratios"],
        "xla_speedup": xla_speedup,
        "toolkit_sps_xla": figures[True]["toolkit_sps"],
        "plain_keras_sps_xla": figures[True]["plain_keras_sps"],
        "ratio_xla": figures[True]["ratio"],
        "plain_keras_xla_speedup": figures[True]["plain_keras_sps"]
        / figures[False]["plain_keras_sps"],
        "batch_size": args.batch_size, "steps": args.steps,
        "repeats": args.repeats, "quick": bool(args.quick),
        "wall_seconds": elapsed,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
