"""`keras-mm embed RUN`: a dual encoder's embeddings of a split, for any
vector index.

For a finished run with a contrastive head, every example of the split goes
through the model once (the same pipeline as evaluation); each aligned
input's L2-normalised embeddings are written as `<input>.npy` (float32
`[n, embedding_dim]`, row i = example i) beside `keys.npy` (int64 `[n]`:
the manifest row index, 0-based, header excluded; for TFRecords `file index
* 2**32 + record index`) and `embeddings.json` (split, head, inputs,
dimension, count, key meaning). Rows the bad-input policy skipped are left
out of both. The folder is written under a temporary name and renamed when
complete: an interrupted run leaves no half-written embeddings.
"""

import json
import os
import shutil

import numpy as np

from keras_mm.errors import ConfigError

EMBEDDINGS_FILE = "embeddings.json"


def _head(model, spec, head):
    from keras_mm.training.retrieval_eval import contrastive_heads

    heads = contrastive_heads(spec)
    if not heads:
        raise ConfigError("heads", "the run has no contrastive head, so no "
                          "embeddings: embed needs a dual-encoder run "
                          "(fusion: none, a head of type contrastive)")
    if head is None:
        return next(iter(heads))
    if head not in heads:
        raise ConfigError("heads", f"--head {head!r} is not one of the "
                          f"contrastive heads {', '.join(heads)}")
    return head


def split_keys(pipe):
    """The keys of the examples `pipe`'s datasets yield, in order."""
    skipped = pipe.skipped_keys()
    if pipe.manifest is not None:
        keys = range(len(pipe.manifest))
    else:
        keys = pipe.source.all_keys()
    return np.asarray([k for k in keys if k not in skipped], np.int64)


def embed_run(run_dir, split="test", out=None, head=None):
    """Writes a finished dual-encoder run's embeddings of `split`.

    Args:
        run_dir: the run folder (or the recipe trained into it).
        split: a split of the recipe's `data.splits`.
        out: the folder to write (default `<run>/embeddings/<split>`); it
            must not exist yet.
        head: the contrastive head (default: the first).

    Returns:
        The `embeddings.json` content plus `"path"` (the folder).

    Example:

    >>> info = embed_run("runs/retrieval", split="test",
    ...                  out="embeddings/")       # doctest: +SKIP
    >>> np.load("embeddings/image.npy").shape      # doctest: +SKIP
    (1000, 128)
    """
    import keras

    from keras_mm.builder import model_spec
    from keras_mm.training import load_run, run_data
    from keras_mm.training.finished_run import model_input_names
    from keras_mm.training.run_folder import find_run_dir

    run_dir = find_run_dir(run_dir)
    recipe, model, preprocessors = load_run(run_dir)
    if split not in recipe["data"]["splits"]:
        raise ConfigError("data.splits", f"--split {split!r} is not one of "
                          f"{', '.join(recipe['data']['splits'])}")
    spec = model_spec(model)
    head = _head(model, spec, head)
    out = os.fspath(out or os.path.join(run_dir, "embeddings", split))
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(
            f"{out} exists and is not empty; give a new --out folder (or "
            "remove it): embeddings are never mixed with older ones")
    pipe = run_data.make_pipeline(recipe, split, preprocessors, spec,
                                  input_names=model_input_names(model),
                                  with_labels=False)
    dataset = run_data.eval_dataset(pipe, recipe["training"]["batch_size"])
    parts = []
    for batch in dataset:
        features = batch[0] if isinstance(batch, tuple) else batch
        outputs = model(features, training=False)
        parts.append(np.asarray(keras.ops.convert_to_numpy(outputs[head]),
                                np.float32))
    vectors = np.concatenate(parts) if parts else np.zeros(
        (0, len(model.get_layer(head).modalities),
         model.get_layer(head).embedding_dim), np.float32)
    keys = split_keys(pipe)
    if len(keys) != len(vectors):
        raise RuntimeError(f"embed: {len(vectors)} embeddings but {len(keys)} "
                           f"keys in split {split!r}; please report this")
    modalities = list(model.get_layer(head).modalities)
    info = {"run": os.path.abspath(run_dir), "split": split, "head": head,
            "inputs": modalities, "embedding_dim": int(vectors.shape[-1]),
            "count": int(len(keys)), "normalized": "l2",
            "keys": ("manifest row index (0-based, header excluded)"
                     if pipe.manifest is not None else
                     "TFRecord file index * 2**32 + record index"),
            "files": {m: f"{m}.npy" for m in modalities}}
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{os.path.basename(out)}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        for j, modality in enumerate(modalities):
            np.save(os.path.join(tmp, f"{modality}.npy"), vectors[:, j])
        np.save(os.path.join(tmp, "keys.npy"), keys)
        with open(os.path.join(tmp, EMBEDDINGS_FILE), "w",
                  encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        if os.path.isdir(out):
            os.rmdir(out)           # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(info, path=os.path.abspath(out))
