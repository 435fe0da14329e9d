"""Bad input: every case under every policy, and the report."""

import json
import os
import struct

import numpy as np
import pytest

from test_pipeline import LABELS
from test_pipeline import N
from test_pipeline import collect
from test_pipeline import make_manifest
from test_pipeline import make_preprocessors
from test_pipeline import manifest_rows
from test_pipeline import write_csv
from test_pipeline import write_wav
from keras_mm.data import validation as validation_lib
from keras_mm.data.audio_preprocessor import AudioPreprocessor
from keras_mm.data.bad_input import BadInputReport
from keras_mm.data.pipeline import Pipeline
from keras_mm.errors import DataError

INPUTS = ["image", "audio", "imu", "caption", "tab"]   # presence columns


def write_float_wav(path, n=800, rate=8000):
    """A WAV with IEEE-float samples (format tag 3: not PCM)."""
    data = np.zeros(n, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def _missing_file(folder, rows, i):
    os.remove(os.path.join(folder, "files", f"img{i}.png"))


def _undecodable_image(folder, rows, i):
    with open(os.path.join(folder, "files", f"img{i}.png"), "wb") as f:
        f.write(b"these bytes are not an image")


def _truncated_wav(folder, rows, i):
    path = os.path.join(folder, "files", f"snd{i}.wav")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:60])              # header + a few samples, no more


def _non_pcm_wav(folder, rows, i):
    write_float_wav(os.path.join(folder, "files", f"snd{i}.wav"))


def _other_sample_rate(folder, rows, i):
    write_wav(os.path.join(folder, "files", f"snd{i}.wav"), i, rate=16000)


def _empty_text(folder, rows, i):
    rows[i]["caption"] = ""


def _all_nan_sensor(folder, rows, i):
    with open(os.path.join(folder, "files", f"imu{i}.csv"), "w") as f:
        f.write("ax,ay\nnan,nan\n,\nnan,\n")


def _unknown_label(folder, rows, i):
    rows[i]["label"] = "fish"


# case: (corrupt function, input, column, reason)
CASES = {
    "missing_file": (_missing_file, "image", "image", "missing_file"),
    "undecodable_image": (_undecodable_image, "image", "image",
                          "decode_error"),
    "truncated_wav": (_truncated_wav, "audio", "audio", "decode_error"),
    "non_pcm_wav": (_non_pcm_wav, "audio", "audio", "decode_error"),
    "sample_rate": (_other_sample_rate, "audio", "audio", "sample_rate"),
    "empty_text": (_empty_text, "caption", "caption", "empty"),
    "all_nan_sensor": (_all_nan_sensor, "imu", "imu", "all_nan"),
    "unknown_label": (_unknown_label, "label", "label", "unknown_label"),
}
# Row i + 1 (1-based) holds case number i; rows 1 and 10 are clean.
BAD_ROW = {name: k + 2 for k, name in enumerate(CASES)}


def make_bad_manifest(folder, cases):
    folder = str(folder)
    rows = manifest_rows()
    make_manifest(folder, rows=rows)
    for name in cases:
        CASES[name][0](folder, rows, BAD_ROW[name] - 1)
    return write_csv(os.path.join(folder, "train.csv"), rows)


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory):
    return make_bad_manifest(tmp_path_factory.mktemp("bad"), CASES)


def check_report(report, path, policy, manifest):
    assert report.total == N
    assert report.num_problems == len(CASES)
    expected = {}
    for name, (_, inp, _, reason) in CASES.items():
        expected.setdefault(inp, {})
        expected[inp][reason] = expected[inp].get(reason, 0) + 1
    assert report.counts == expected
    data = json.loads(open(path).read())
    assert data["policy"] == policy and data["counts"] == expected
    assert data["source"] == manifest
    by_row = {r["row"]: r for r in data["rows"]}
    for name, (_, inp, column, reason) in CASES.items():
        entry = by_row[BAD_ROW[name]]
        assert (entry["input"], entry["column"], entry["reason"],
                entry["file"]) == (inp, column, reason, manifest), name
    return data, by_row


def test_skip_policy(all_cases, tmp_path, caplog):
    report_path = str(tmp_path / "report.json")
    pipe = Pipeline(all_cases, make_preprocessors(), labels=LABELS,
                    bad_input="skip", report_path=report_path,
                    presence_mask=True)
    with caplog.at_level("WARNING", logger="keras_mm.data"):
        features, labels = collect(pipe.dataset(batch_size=4))
    data, by_row = check_report(pipe.report, report_path, "skip", all_cases)
    assert data["skipped"] == len(CASES) and data["kept"] == N - len(CASES)
    assert {r["action"] for r in data["rows"]} == {"skipped"}
    # Only rows 1 and 10 are left, with every modality present.
    np.testing.assert_allclose(labels["score"][:, 0], [0.0, 2.25])
    np.testing.assert_array_equal(features["presence"], 1.0)
    assert "8 skipped" in caplog.text
    assert "row 3, column 'image': decode_error" in caplog.text
    assert "Unknown image file format" in \
        by_row[BAD_ROW["undecodable_image"]]["detail"]
    assert "16000" in by_row[BAD_ROW["sample_rate"]]["detail"]


def test_missing_policy(all_cases, tmp_path):
    report_path = str(tmp_path / "report.json")
    pipe = Pipeline(all_cases, make_preprocessors(), labels=LABELS,
                    bad_input="missing", report_path=report_path,
                    presence_mask=True)
    features, labels = collect(pipe.dataset(batch_size=4))
    data, by_row = check_report(pipe.report, report_path, "missing",
                                all_cases)
    # The bad label cannot be marked missing: that row is skipped.
    assert by_row[BAD_ROW["unknown_label"]]["action"] == "skipped"
    assert data["skipped"] == 1 and data["marked_missing"] == len(CASES) - 1
    rows = [r for r in range(1, N + 1) if r != BAD_ROW["unknown_label"]]
    np.testing.assert_allclose(labels["score"][:, 0],
                               [float(f"{(r - 1) / 4:.2f}") for r in rows])
    presence = features["presence"]
    for name, (_, inp, _, _) in CASES.items():
        if name == "unknown_label":
            continue
        k = rows.index(BAD_ROW[name])
        expected = [0.0 if i == inp else 1.0 for i in INPUTS]
        np.testing.assert_array_equal(presence[k], expected, err_msg=name)
        assert not np.any(features[inp][k])        # absent: all zeros
    np.testing.assert_array_equal(presence[0], 1.0)


def test_error_policy_names_the_first_bad_row(all_cases, tmp_path):
    report_path = str(tmp_path / "report.json")
    with pytest.raises(DataError) as info:
        Pipeline(all_cases, make_preprocessors(), labels=LABELS,
                 bad_input="error", report_path=report_path).validate()
    assert str(info.value).startswith(
        f"{all_cases}, row 2, column 'image': missing_file:")
    assert "fix the path" in str(info.value)
    data, _ = check_report(BadInputReport.read_json(report_path),
                           report_path, "error", all_cases)
    assert {r["action"] for r in data["rows"]} == {"error"}


@pytest.mark.parametrize("case", list(CASES))
def test_error_policy_for_each_case(case, tmp_path):
    path = make_bad_manifest(tmp_path, [case])
    _, inp, column, reason = CASES[case]
    with pytest.raises(DataError) as info:
        Pipeline(path, make_preprocessors(), labels=LABELS).dataset(4)
    error = info.value
    assert (error.file, error.row, error.column, error.reason) == \
        (path, BAD_ROW[case], column, reason)
    assert str(error).startswith(
        f"{path}, row {BAD_ROW[case]}, column '{column}': {reason}")


def test_failure_after_the_check_names_the_row(tmp_path):
    path = make_manifest(str(tmp_path), n=4)
    pipe = Pipeline(path, make_preprocessors(), labels=LABELS)
    batches = pipe.iterate(batch_size=2)
    os.remove(tmp_path / "files" / "img3.png")     # after validation
    with pytest.raises(DataError) as info:
        list(batches)
    error = info.value
    assert (error.row, error.column, error.reason) == (4, "image",
                                                       "missing_file")
    assert "failed after the bad-input check" in str(error)
    assert "img3.png" in str(error)


def test_without_validation_a_bad_label_still_gets_a_message(tmp_path):
    path = make_bad_manifest(tmp_path, ["unknown_label"])
    pipe = Pipeline(path, make_preprocessors(), labels=LABELS,
                    validate=False)
    with pytest.raises(DataError) as info:
        list(pipe.iterate(batch_size=4))
    assert (info.value.column, info.value.row, info.value.reason) == \
        ("label", BAD_ROW["unknown_label"], "unknown_label")
    assert "fish" in str(info.value) and "is not one of" in str(info.value)


def test_every_example_failing_is_a_config_error(tmp_path):
    path = make_manifest(str(tmp_path), n=3)
    pre = {"audio": AudioPreprocessor("audio", sample_rate=16000,
                                      duration=0.05)}
    with pytest.raises(DataError, match=r"every example of input 'audio' "
                                        r"fails to decode"):
        Pipeline(path, pre, bad_input="skip").validate()


def test_validation_runs_once_and_again_after_a_change(tmp_path,
                                                       monkeypatch):
    path = make_manifest(str(tmp_path), n=3)
    calls = []
    original = validation_lib._find_problems

    def counting(pipe):
        calls.append(1)
        return original(pipe)

    monkeypatch.setattr(validation_lib, "_find_problems", counting)
    pre = {"image": make_preprocessors()["image"]}
    Pipeline(path, pre).validate()
    Pipeline(path, pre).validate()
    assert len(calls) == 1
    _undecodable_image(str(tmp_path), None, 1)       # the file changes
    os.utime(tmp_path / "files" / "img1.png", ns=(1, 1))
    with pytest.raises(DataError, match="row 2, column 'image'"):
        Pipeline(path, pre).validate()
    assert len(calls) == 2
    assert validation_lib._VALIDATION_CACHE


def test_report_object():
    with pytest.raises(ValueError, match=r"policy='drop' is not one of "
                                         r"'error', 'skip', 'missing'"):
        BadInputReport("m.csv", policy="drop")
    report = BadInputReport("m.csv", policy="skip", max_rows=2)
    report.total = 5
    for row in (1, 2, 3):
        report.add(input="image", reason="decode_error", row=row,
                   column="img", file="m.csv", detail="bad", action="skipped")
    report.add(input="label", reason="unknown_label", row=4, column="y",
               file="m.csv", action="skipped")
    with pytest.raises(ValueError, match="reason='oops'"):
        report.add(input="x", reason="oops", row=1)
    assert report.counts == {"image": {"decode_error": 3},
                             "label": {"unknown_label": 1}}
    assert report.count("image") == 3 and report.count(reason="unknown_label")
    assert [r["row"] for r in report.rows] == [1, 2]
    text = report.summary()
    assert "4 problem(s) in 5 example(s)" in text
    assert "m.csv, row 1, column 'img': decode_error (bad) [skipped]" in text
    assert "and 2 more" in text
    again = BadInputReport.from_dict(json.loads(json.dumps(
        report.to_dict())))
    assert again.to_dict() == report.to_dict()


def test_tfrecords_report_the_same_problems(all_cases, tmp_path):
    from keras_mm.data.tfrecords import convert_manifest_to_tfrecords
    convert_manifest_to_tfrecords(all_cases, tmp_path / "s", 3,
                                  file_columns=["image", "audio", "imu"],
                                  progress=False)
    report_path = str(tmp_path / "report.json")
    pipe = Pipeline(str(tmp_path / "s"), make_preprocessors(),
                    labels=LABELS, bad_input="missing", presence_mask=True,
                    report_path=report_path)
    features, labels = collect(pipe.dataset(batch_size=4, cycle_length=1))
    report = pipe.report
    assert report.total == N and report.skipped == 1
    expected = Pipeline(all_cases, make_preprocessors(), labels=LABELS,
                        bad_input="missing").validate()
    assert report.counts == expected.counts
    for entry in report.rows:
        # Named by shard file and record, and by the manifest row.
        assert entry["file"].startswith(str(tmp_path / "s" / "data-"))
        name = [n for n, row in BAD_ROW.items()
                if row == entry["manifest_row"]][0]
        assert entry["reason"] == CASES[name][3]
    assert labels["score"].shape == (N - 1, 1)
    assert features["presence"].sum() == 5 * (N - 1) - (len(CASES) - 1)


def test_the_same_report_is_logged_once_per_process(tmp_path, caplog):
    """The scoreboard's single-modality runs check the same splits again:
    their identical report goes to DEBUG, not to the user a second time."""
    from keras_mm.data.bad_input import BadInputReport

    source = str(tmp_path / "train.csv")
    clean = BadInputReport.from_dict({"source": source, "total": 5})
    bad = BadInputReport.from_dict({
        "source": source, "policy": "skip", "total": 5, "skipped": 1,
        "problems": 1, "counts": {"image": {"decode_error": 1}}})
    with caplog.at_level("DEBUG", logger="keras_mm.data"):
        for report in (clean, clean, bad, bad):
            report.log()
    levels = [(r.levelname, r.getMessage().splitlines()[0])
              for r in caplog.records]
    assert levels == [
        ("INFO", f"bad input in {source}: none in 5 example(s)"),
        ("DEBUG", f"bad input in {source}: none in 5 example(s)"),
        ("WARNING", levels[2][1]), ("DEBUG", levels[2][1])]
    assert "1 skipped" in levels[2][1]
