"""`benchmarks/retrieval_av_mnist.py --quick`, run for real so it cannot rot.

The script runs in a subprocess on the shared data with a fresh cache
folder (the helpers of `test_benchmarks_quick.py`); the test checks that
it exits 0, prints markdown tables, and ends with one JSON object holding
the keys the issue asks for, with fractions in [0, 1] and a positive
throughput ratio. Skipped where `../shared/data` is absent (the
`shared_data` fixture).
"""

import math

import pytest

from test_benchmarks_quick import (assert_fraction, last_json,
                                   run_script)

SCRIPT = "retrieval_av_mnist.py"
DIRECTIONS = ("image_to_audio", "audio_to_image")


@pytest.mark.slow
def test_retrieval_av_mnist_quick(shared_data, tmp_path):
    result = last_json(run_script(SCRIPT, "--quick", "--data",
                                  str(shared_data), "--cache",
                                  str(tmp_path / "cache")))
    assert result["quick"] is True
    assert result["headline"] == {"variant": "degraded", "loss": "clip"}

    assert_fraction(result["class_r1_image_to_audio"],
                    "class_r1_image_to_audio")
    for loss in ("clip", "siglip"):
        block = result["retrieval"]["degraded"][loss]
        for direction in DIRECTIONS:
            for key in (f"r1_{direction}", f"class_r1_{direction}",
                        f"class_r5_{direction}"):
                assert_fraction(block[key], f"{loss}.{key}")
            assert block[f"class_r1_{direction}"] <= \
                block[f"class_r5_{direction}"] + 1e-9, (loss, direction)
            assert 1.0 <= block[f"median_rank_{direction}"] <= 2000.0
        assert_fraction(block["zero_shot_image_from_audio"],
                        f"{loss}.zero_shot_image_from_audio")
    assert result["class_r1_image_to_audio"] == \
        result["retrieval"]["degraded"]["clip"]["class_r1_image_to_audio"]

    finetune = result["finetune"]["degraded"]
    for key in ("scratch", "clip", "siglip"):
        for modality in ("image", "audio"):
            assert_fraction(finetune[key][modality], f"{key}.{modality}")
    gains = finetune["gain_points"]["clip"]
    for modality in ("image", "audio"):
        assert gains[modality] == pytest.approx(
            100 * (finetune["clip"][modality]
                   - finetune["scratch"][modality]), abs=0.05)
    gain = result["finetune_gain_points"]
    assert isinstance(gain, float) and -100.0 <= gain <= 100.0
    assert gain == pytest.approx(min(gains.values()), abs=1e-3)

    ratio = result["throughput_ratio"]
    assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    ratios = result["throughput"]["ratios"]
    assert ratios and all(r > 0 and math.isfinite(r) for r in ratios)
    assert min(ratios) <= ratio <= max(ratios)
    # The quick run learns: CLIP's class-level retrieval is above chance
    # (0.1 with 10 classes); measured about 0.4-0.5 on the 2,048-row subset.
    assert result["class_r1_image_to_audio"] > 0.2, result["retrieval"]


def test_retrieval_absent_data_exits_zero_with_a_message(tmp_path):
    missing = tmp_path / "no_such_data"
    proc = run_script(SCRIPT, "--quick", "--data", str(missing), "--cache",
                      str(tmp_path / "cache"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SKIPPED" in proc.stdout and str(missing) in proc.stdout
    assert not (tmp_path / "cache").exists()
