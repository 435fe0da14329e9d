"""Held-out-speaker accuracy on FSDD: audio encoders x augmentation on/off.

The Free Spoken Digit Dataset (`../shared/data/fsdd/recordings`: 6
speakers x 10 digits x 50 takes, 8 kHz WAV, 0.14-2.28 s) is split by
SPEAKER: for each held-out speaker (`--heldout`, default `theo`), the model
trains on takes 5-49 of the other 5 speakers, and is tested on all 50 takes
of the held-out one ("held-out" column) and on takes 0-4 of the 5 training
speakers (the official test takes: "seen speakers"). The gap between the
two is what a user sees on their own recordings.

Each clip goes through the toolkit's `AudioPreprocessor` (1 s at 8 kHz,
center crop in evaluation, random crop in training, log-mel 40 bins,
frames 256/128 -> [61, 40]) with the augmentation setting of the row
(`AUGMENTATION`: `off`; `on` = time shift, gain, noise and SpecAugment
masks; `shift_gain`, `masks`, `noise` one step at a time). Training
features are recomputed every epoch with the epoch's seed
(`transform(..., training=True, seed=...)`, as the pipeline does), the
test features with `training=False`. The model is `AudioTower(encoder=...,
frontend=None)` at its defaults (dim 64, filters 32-64) and a softmax
Dense; Adam 1e-3 (the recipe default), batch 32, `--epochs` epochs, seed 0.

The last line is one JSON object: `results[encoder][setting]` with
`heldout` and `seen` accuracy (mean over the held-out speakers) and
`per_speaker`, then `best` (the encoder / setting with the highest
held-out accuracy) and `library_defaults` (AudioTower's default encoder
and AudioPreprocessor's default augmentation, chosen by this figure: see
BENCHMARKS.md). One seed, 500 held-out clips: a difference of 1-2 points
is within the noise.

Usage:
    python benchmarks/audio_heldout_speaker.py                 # full
    python benchmarks/audio_heldout_speaker.py --quick         # smoke run
    python benchmarks/audio_heldout_speaker.py --heldout theo,nicolas
"""

import inspect
import pathlib

import _common

ENCODERS = ("cnn", "crnn")
AUGMENTATION = {
    "off": {"time_shift": 0.0, "gain_db": 0.0, "noise_snr": None,
            "time_masks": 0, "time_mask_width": 0, "freq_masks": 0,
            "freq_mask_width": 0},
    "on": {"time_shift": 0.1, "gain_db": 6.0, "noise_snr": [10.0, 40.0],
           "time_masks": 2, "time_mask_width": 8, "freq_masks": 2,
           "freq_mask_width": 6},
}
# One step at a time (`--settings shift_gain,masks,noise`).
AUGMENTATION.update({
    "shift_gain": dict(AUGMENTATION["off"], time_shift=0.1, gain_db=6.0),
    "masks": dict(AUGMENTATION["off"], time_masks=2, time_mask_width=8,
                  freq_masks=2, freq_mask_width=6),
    "noise": dict(AUGMENTATION["off"], noise_snr=[10.0, 40.0]),
})
PREPROCESS = {"sample_rate": 8000, "duration": 1.0, "features": "log_mel",
              "num_mel_bins": 40, "frame_length": 256, "frame_step": 128}
EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
QUICK = {"epochs": 2, "train_per_speaker": 40, "encoders": ["cnn"]}


def load_fsdd(folder):
    """`[(bytes, digit, speaker, take)]` of every recording."""
    items = []
    for path in sorted(pathlib.Path(folder).glob("*.wav")):
        digit, speaker, take = path.stem.split("_")
        items.append((path.read_bytes(), int(digit), speaker, int(take)))
    return items


def features(pre, raws, training, seed):
    """`pre`'s model-ready features of `raws`, 250 clips a batch; with
    `training`, the draws are stateless functions of (seed, clip)."""
    import numpy as np
    import tensorflow as tf
    out = []
    for start in range(0, len(raws), 250):
        raw = tf.constant(raws[start:start + 250])
        if training:
            index = tf.range(start, start + len(raw))
            seeds = tf.stack([tf.fill(tf.shape(index), seed), index], 1)
            parsed = pre.parse_batch(raw, training=True, seeds=seeds)
            batch = pre.transform(parsed, training=True,
                                  seed=tf.constant([seed, start]))
        else:
            batch = pre(raw)
        out.append(batch[pre.name].numpy())
    return np.concatenate(out)


def train_and_test(encoder, setting, train, tests, epochs, seed=0):
    import keras
    import numpy as np

    from keras_mm.data import AudioPreprocessor
    from keras_mm.towers import AudioTower
    _common.set_seed(seed)
    pre = AudioPreprocessor("audio", **PREPROCESS, **AUGMENTATION[setting])
    shape = pre.output_shape()
    model = keras.Sequential([
        keras.Input(shape),
        AudioTower(encoder=encoder, frontend=None),
        keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss="sparse_categorical_crossentropy")
    raws, labels = [t[0] for t in train], np.array([t[1] for t in train])
    with _common.Timer() as timer:
        for epoch in range(epochs):
            x = features(pre, raws, True, 1000 * seed + epoch)
            model.fit(x, labels, batch_size=BATCH_SIZE, epochs=1,
                      shuffle=True, verbose=0)
    scores = {}
    for name, items in tests.items():
        x = features(pre, [t[0] for t in items], False, 0)
        y = np.array([t[1] for t in items])
        scores[name] = float(np.mean(np.argmax(model.predict(
            x, batch_size=250, verbose=0), 1) == y))
    scores["seconds"] = timer.seconds
    return scores


def library_defaults():
    from keras_mm.data import AudioPreprocessor
    from keras_mm.towers import AudioTower
    tower = inspect.signature(AudioTower.__init__).parameters
    pre = inspect.signature(AudioPreprocessor.__init__).parameters
    return {"encoder": tower["encoder"].default,
            "augmentation": {k: pre[k].default for k in AUGMENTATION["on"]}}


def main():
    parser = _common.make_parser(__doc__)
    parser.add_argument("--heldout", default="theo",
                        help="comma-separated held-out speaker(s), one fold "
                             "each (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--settings", default="off,on",
                        help="comma-separated keys of AUGMENTATION "
                             f"({', '.join(AUGMENTATION)})")
    parser.add_argument("--subsample", type=int, default=1,
                        help="keep every N-th training clip (ablations)")
    args = parser.parse_args()
    folder = args.data / "fsdd" / "recordings"
    _common.require_data(folder, what="FSDD")
    _common.configure_tensorflow(args.threads)
    encoders = args.encoders.split(",")
    settings = args.settings.split(",")
    epochs = args.epochs
    if args.quick:
        encoders, epochs = QUICK["encoders"], QUICK["epochs"]
    info = _common.print_header(
        "FSDD held-out-speaker accuracy", args,
        [f"held out: {args.heldout}; {epochs} epochs, batch {BATCH_SIZE}, "
         f"every {args.subsample}. training clip, "
         f"Adam {LEARNING_RATE}, seed 0",
         f"augmentation: { {k: AUGMENTATION[k] for k in settings} }"])
    items = load_fsdd(folder)
    results = {e: {s: {"per_speaker": {}} for s in settings}
               for e in encoders}
    for speaker in args.heldout.split(","):
        train = [t for t in items if t[2] != speaker and t[3] >= 5]
        train = train[::args.subsample]
        if args.quick:
            train = [t for i, t in enumerate(train)
                     if i % 45 < QUICK["train_per_speaker"] // 10]
        tests = {"heldout": [t for t in items if t[2] == speaker],
                 "seen": [t for t in items if t[2] != speaker and t[3] < 5]}
        if not tests["heldout"]:
            parser.error(f"--heldout {speaker!r}: no FSDD recording of "
                         "that speaker")
        for encoder in encoders:
            for setting in settings:
                scores = train_and_test(encoder, setting, train, tests,
                                        epochs)
                results[encoder][setting]["per_speaker"][speaker] = scores
                print(f"  {speaker} {encoder} {setting}: held-out "
                      f"{100 * scores['heldout']:.1f}%, seen "
                      f"{100 * scores['seen']:.1f}% "
                      f"({scores['seconds']:.0f} s)", flush=True)
    rows = []
    for encoder in encoders:
        for setting in settings:
            entry = results[encoder][setting]
            runs = list(entry["per_speaker"].values())
            for key in ("heldout", "seen"):
                entry[key] = sum(r[key] for r in runs) / len(runs)
            entry["seconds"] = sum(r["seconds"] for r in runs)
            rows.append([encoder, setting, _common.pct(entry["heldout"]),
                         _common.pct(entry["seen"]),
                         _common.pct(entry["seen"] - entry["heldout"]),
                         f"{entry['seconds']:.0f}"])
    print(_common.markdown_table(
        ["encoder", "augmentation", "held-out speaker %", "seen speakers %",
         "gap (points)", "train s"], rows))
    best = max(((e, s) for e in encoders for s in settings),
               key=lambda k: results[k[0]][k[1]]["heldout"])
    _common.emit_json({"heldout_speakers": args.heldout.split(","),
                       "epochs": epochs, "subsample": args.subsample,
                       "settings": {k: AUGMENTATION[k] for k in settings},
                       "results": results,
                       "best": {"encoder": best[0], "augmentation": best[1]},
                       "library_defaults": library_defaults(),
                       "machine": info, "quick": args.quick})


if __name__ == "__main__":
    main()
