"""Load test of an exported model's in-process signatures (issue 13).

Bounded and loopback-free: 8 threads call the loaded SavedModel's
signatures for 30 s, about 10% of the requests malformed. Every outcome is
counted: successes, clear errors (an `InvalidArgumentError` whose one-line
summary names an input of the signature), unclear errors (anything else:
another exception class, a `UnicodeDecodeError` from TF's formatting, a
message naming no input), wrong answers (an answer that differs from the
single-threaded answer to the same request) and RSS growth after warm-up.
Not in the default suite: `pytest -m slow tests/test_serving_load.py`.
"""

import collections
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_mm.serving import export
from keras_mm.serving.verify_savedmodel import error_summary

from test_hostile_serving import Served, make_model, make_rows, png_bytes

THREADS = 8
SECONDS = 30.0
WARMUP_SECONDS = 3.0
MALFORMED_FRACTION = 0.1


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def good_requests(served, rng):
    """(signature, inputs) pairs of well-formed requests."""
    requests = []
    for size in (1, 2, 3):
        rows = make_rows(rng, size)
        requests.append(("serving_default", served.raw(rows)))
        requests.append(("serve_tensors", served.tensors(rows)))
    partial = [{"text": "a red cat"}, {"image": png_bytes(
        rng.integers(0, 256, (12, 5, 3))), "city": "lima"}]
    requests.append(("serving_default", served.raw(partial)))
    return requests


def malformed_requests(served, rng):
    """(signature, inputs, input the error must name) triples."""
    raw = served.raw(served.rows[:2])
    tensors = served.tensors(served.rows[:2])
    ids = tensors["text"].numpy().copy()
    ids[0, 0] = -3
    image = tensors["image"].numpy().copy()
    image[0, 0, 0, 0] = np.nan
    limit = served.metadata["inputs"]["text"]["max_bytes"]
    examples = tf.constant([b"\xff\xfe\x80 garbage \xc3\x28"])
    return [
        ("serving_default", dict(raw, text=tf.constant(
            ["x" * (limit + 1), "y"])), "text"),
        ("serving_default", dict(raw, text=tf.constant(["a"])), "text"),
        ("serving_default", {k: v[:0] for k, v in raw.items()}, None),
        ("serve_tensors", dict(tensors, text=tf.constant(ids)), "text"),
        ("serve_tensors", dict(tensors, image=tf.constant(image)), "image"),
        ("serve_tensors", dict(tensors, image=tf.image.resize(
            tensors["image"], [16, 16])), "image"),
        ("serve_tensors", dict(tensors, presence=tf.zeros_like(
            tensors["presence"])), "presence"),
        ("serve_examples", {"examples": examples}, "examples"),
    ]


@pytest.mark.slow
def test_eight_threads_with_malformed_requests(tmp_path):
    model, pre = make_model()
    rng = np.random.default_rng(0)
    rows = make_rows(rng, 3)
    path = export(model, pre, "load", golden_examples=rows,
                  base_dir=tmp_path, verify=False)
    served = Served(path, pre, rows)
    good = good_requests(served, rng)
    bad = malformed_requests(served, rng)
    # Single-threaded answers: the reference of every good request, and
    # each malformed one is refused (twice: the second must match).
    answers = [served.call(name, **inputs) for name, inputs in good]
    for name, inputs, _ in bad:
        with pytest.raises(tf.errors.InvalidArgumentError):
            served.signatures[name](**inputs)

    counts = collections.Counter()
    unclear, wrong = [], []
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS
    warm_until = time.monotonic() + WARMUP_SECONDS
    rss = {}

    def worker(seed):
        local = np.random.default_rng(seed)
        while time.monotonic() < stop:
            if local.random() < MALFORMED_FRACTION:
                name, inputs, named = bad[local.integers(len(bad))]
                try:
                    served.signatures[name](**inputs)
                    outcome, detail = "unclear", f"{name}: accepted"
                except tf.errors.InvalidArgumentError as e:
                    summary = error_summary(e)
                    ok = (summary.startswith("assertion failed: [empty "
                                             "batch") if named is None
                          else f"`{named}`" in summary)
                    outcome = "clear" if ok else "unclear"
                    detail = f"{name}: {summary}"
                except Exception as e:  # noqa: BLE001 - counted, reported
                    outcome, detail = "unclear", f"{name}: {e!r}"[:300]
                with lock:
                    counts[outcome] += 1
                    if outcome == "unclear":
                        unclear.append(detail)
                continue
            k = int(local.integers(len(good)))
            name, inputs = good[k]
            try:
                got = served.call(name, **inputs)
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    counts["unclear"] += 1
                    unclear.append(f"good {name}: {e!r}"[:300])
                continue
            same = all(
                got[key].tolist() == want.tolist() if want.dtype == object
                else np.allclose(got[key], want, atol=1e-6, rtol=0)
                for key, want in answers[k].items())
            with lock:
                counts["success" if same else "wrong"] += 1
                if not same:
                    wrong.append(name)

    def sample_rss():
        while time.monotonic() < warm_until:
            time.sleep(0.05)
        rss["start"] = rss_mb()
        peak = rss["start"]
        while time.monotonic() < stop:
            peak = max(peak, rss_mb())
            time.sleep(0.2)
        rss["peak"] = peak

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(THREADS)]
    threads.append(threading.Thread(target=sample_rss))
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    rss["end"] = rss_mb()
    growth = rss["end"] - rss["start"]
    print(f"\nload: {dict(counts)}; RSS after warm-up {rss['start']:.0f} "
          f"MB, peak {rss['peak']:.0f} MB, end {rss['end']:.0f} MB "
          f"(growth {growth:+.1f} MB); pid {os.getpid()}")
    assert counts["success"] > 0 and counts["clear"] > 0, counts
    assert counts["wrong"] == 0, wrong[:5]
    assert counts["unclear"] == 0, unclear[:5]
    assert growth < 50.0, rss
