"""`keras-mm init` and `keras-mm data inspect`'s inference (issue 12, "start
from the data"): file probes on real generated files, column kinds, the
folder layout, the recipe written, the shipped recipes, and init -> train
-> export -> verify end to end (slow)."""

import json
import os
import shutil
import struct
import subprocess
import sys
import wave
import zipfile

import numpy as np
import pytest

import init_data as gen
from keras_mm.cli.main import main
from keras_mm.errors import DataError
from keras_mm.inference import (copy_example, example_names, infer_dataset,
                                init_recipe)
from keras_mm.inference.column_kinds import infer_columns, percentile
from keras_mm.inference.file_probe import probe_file
from keras_mm.inference.folder_layout import folder_examples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- file probes --------------------------------------------------------------


@pytest.mark.parametrize("ext,fmt,channels", [
    (".png", "PNG", 1), (".png", "PNG", 3), (".jpg", "JPEG", 3),
    (".bmp", "BMP", 3), (".webp", "WebP", 3), (".gif", "GIF", 3)])
def test_probe_images(tmp_path, ext, fmt, channels):
    path = gen.write_image(str(tmp_path / f"x{ext}"), size=(7, 11),
                           channels=channels)
    info = probe_file(path)
    assert (info.kind, info.format) == ("image", fmt)
    assert info.shape == [7, 11, channels if fmt not in ("GIF",) else 3]
    assert info.note is None


def test_probe_animated_gif_is_video(tmp_path):
    info = probe_file(gen.write_gif(str(tmp_path / "v.gif"), frames=5,
                                    size=(6, 9)))
    assert (info.kind, info.format, info.shape) == ("video", "GIF",
                                                    [5, 6, 9, 3])


def test_wav_header_matches_the_wave_module(tmp_path):
    """A stereo 11025 Hz file with a LIST chunk before its data: the chunk
    walk gives what Python's `wave` reads."""
    samples = np.arange(2 * 300, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, 11025, 11025 * 4, 4, 16)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"LIST"
            + struct.pack("<I", 5) + b"abcde\0" + b"data"
            + struct.pack("<I", len(samples)) + samples)
    path = tmp_path / "s.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    info = probe_file(str(path))
    with wave.open(str(path)) as w:
        expected = (w.getframerate(), w.getnchannels(), w.getnframes())
    assert (info.sample_rate, info.channels, info.shape[0]) == expected
    assert expected == (11025, 2, 300)


def test_probe_series(tmp_path):
    assert probe_file(gen.write_npy(str(tmp_path / "a.npy"), steps=13,
                                    channels=4)).shape == [13, 4]
    np.save(tmp_path / "b.npy", np.zeros(9, np.float32))
    assert probe_file(str(tmp_path / "b.npy")).shape == [9, 1]
    info = probe_file(gen.write_sensor_csv(str(tmp_path / "c.csv"),
                                           steps=17, channels=3))
    assert (info.kind, info.format, info.shape) == ("sensor", "CSV", [17, 3])


def test_magic_bytes_beat_the_extension(tmp_path):
    jpeg = gen.write_image(str(tmp_path / "photo.png"), fmt="JPEG")
    info = probe_file(jpeg)
    assert (info.kind, info.format) == ("image", "JPEG")
    assert "extension .png but JPEG bytes" in info.note
    wav = gen.write_wav(str(tmp_path / "sound.png"))
    assert probe_file(wav).kind == "audio"


def test_unreadable_bytes_are_refused_by_name(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all" * 10)
    with pytest.raises(DataError, match=r"broken\.png: its extension says "
                       r"PNG but its bytes are not of a kind keras_mm "
                       r"reads"):
        probe_file(str(bad))
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * 64)
    with pytest.raises(DataError, match=r"clip\.mp4: a MP4/MOV video: "
                       "keras_mm has no decoder"):
        probe_file(str(mp4))
    with pytest.raises(DataError, match=r"missing\.wav: cannot read"):
        probe_file(str(tmp_path / "missing.wav"))


# -- column kinds -------------------------------------------------------------


def _rows(n=20):
    return [{"id": f"k{i:03d}", "note": f"the quick brown fox {i} jumps",
             "size": str(0.5 * i), "colour": ("red", "blue")[i % 2],
             "target": ("yes", "no")[i % 2]} for i in range(n)]


def test_columns_by_content():
    out = infer_columns(_rows(), root=".")
    kinds = {c: v["modality"] for c, v in out["columns"].items()}
    assert kinds == {"id": "ignored", "note": "text", "size": "numeric",
                     "colour": "categorical"}
    assert "an id?" in out["columns"]["id"]["reason"]
    assert out["label"] == "target"
    assert out["head"]["type"] == "classification"
    assert out["head"]["class_names"] == ["no", "yes"]


def test_label_column_needed():
    rows = [{k: v for k, v in r.items() if k != "target"} for r in _rows()]
    with pytest.raises(DataError, match="no label column found among id, "
                       "note, size, colour .*pass --label COLUMN"):
        infer_columns(rows, root=".")
    out = infer_columns(rows, root=".", label="colour")
    assert out["label"] == "colour" and "colour" not in out["columns"]
    with pytest.raises(DataError, match="--label 'nope' is not a column"):
        infer_columns(rows, root=".", label="nope")


def test_head_from_label_values():
    rows = [{"x": str(i), "y": str(0.37 * i)} for i in range(30)]
    assert infer_columns(rows, root=".")["head"]["type"] == "regression"
    rows = [{"x": str(i), "y": str(i % 3)} for i in range(30)]
    head = infer_columns(rows, root=".")["head"]
    assert head["type"] == "classification"
    assert head["class_names"] == ["0", "1", "2"]
    rows = [{"x": str(i), "y": "a"} for i in range(5)]
    with pytest.raises(DataError, match="'y' has one value \\('a'\\) in 5 "
                       "rows; a classifier needs two or more classes"):
        infer_columns(rows, root=".")


def test_lengths_from_the_training_rows(tmp_path):
    """Series length and text max_len come from the TRAIN rows: the
    95th percentile, and the count of training examples it truncates."""
    rows = []
    for i in range(40):
        steps = 100 if i >= 20 else 10 + i     # long ones only outside train
        rows.append({"s": os.path.basename(gen.write_npy(
            str(tmp_path / f"{i}.npy"), steps=steps, channels=2)),
            "t": " ".join(["w"] * (3 + i % 20)), "label": str(i % 2)})
    out = infer_columns(rows, root=str(tmp_path),
                        train_rows=range(1, 21))["columns"]
    lengths = list(range(10, 30))
    assert out["s"]["length"]["chosen"] == percentile(lengths) == 28
    assert out["s"]["length"]["truncated"] == 1
    assert out["s"]["length"]["of"] == 20
    assert out["s"]["shape"] == "[T, 2]"
    tokens = [3 + i % 20 for i in range(20)]
    assert out["t"]["max_len"] == int(np.ceil(percentile(tokens) * 1.25))


def test_bad_files_in_a_column_are_named(tmp_path):
    gen.write_wav(str(tmp_path / "a.wav"), rate=8000)
    gen.write_wav(str(tmp_path / "b.wav"), rate=16000)
    gen.write_image(str(tmp_path / "c.png"))
    rows = [{"a": "a.wav", "label": "0"}, {"a": "b.wav", "label": "1"}]
    with pytest.raises(DataError, match=r"different sample rates: 8000 Hz "
                       r"\(row 1.*16000 Hz \(row 2.*resample"):
        infer_columns(rows, root=str(tmp_path))
    gen.write_npy(str(tmp_path / "s2.npy"), channels=2)
    gen.write_npy(str(tmp_path / "s3.npy"), channels=3)
    series_rows = [{"s": "s2.npy", "label": "0"},
                   {"s": "s3.npy", "label": "1"}]
    with pytest.raises(DataError, match=r"different channel counts: 2 \(row "
                       r"1, .*s2\.npy\), 3 \(row 2, .*s3\.npy\); every file"):
        infer_columns(series_rows, root=str(tmp_path))
    rows[1]["a"] = "c.png"
    with pytest.raises(DataError, match="mixes kinds: row 1 is audio"):
        infer_columns(rows, root=str(tmp_path))
    rows[1]["a"] = "gone.wav"
    with pytest.raises(DataError, match=r"gone\.wav, row 2, column 'a': "
                       "cannot read this file"):
        infer_columns(rows, root=str(tmp_path))


# -- folder layout ------------------------------------------------------------


def test_folder_splits_are_seeded_and_kept(tmp_path):
    root = gen.image_folder(str(tmp_path / "flat"), per_class=10)
    (tmp_path / "flat" / "dark" / ".DS_Store").write_bytes(b"x")
    a, b = folder_examples(root, seed=0), folder_examples(root, seed=0)
    assert a == b
    assert folder_examples(root, seed=1)["splits"] != a["splits"]
    counts = {s: len(v) for s, v in a["splits"].items()}
    assert counts == {"train": 16, "val": 2, "test": 2}
    assert a["classes"] == ["bright", "dark"] and not a["kept_splits"]
    assert a["skipped"] == [os.path.join(root, "dark", ".DS_Store")]
    kept = folder_examples(gen.image_folder(str(tmp_path / "kept"),
                                            per_class=10, splits=True))
    assert kept["kept_splits"]
    test_files = sorted(p for p, _ in kept["splits"]["test"])
    assert test_files == sorted(str(tmp_path / "kept" / "test" / c / f)
                                for c in gen.CLASSES for f in ("0.png",
                                                               "5.png"))
    assert len(kept["splits"]["val"]) == 2     # made from train/


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        folder_examples(str(tmp_path))
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match=r"cats: this class folder holds no "
                       "readable file"):
        folder_examples(str(tmp_path))


# -- init, inspect, examples --------------------------------------------------


def test_init_folder_writes_a_recipe_that_validates(tmp_path, capsys,
                                                    monkeypatch):
    """The default-suite check: init via the CLI, the recipe validates as
    `keras-mm train` loads it and names manifests of every file."""
    from keras_mm.recipes import load_recipe

    data = gen.image_folder(str(tmp_path / "photos"), per_class=10)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(data))
    assert main(["init", "photos", "--out", "photos.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.count("recipe written to photos.yaml") == 1
    assert out.count("\nname: photos\n") == 1
    assert "image: image ['PNG'], 3 channel(s)" in out
    assert sorted(os.listdir(data)) == before        # data folder untouched
    recipe = load_recipe("photos.yaml")
    assert recipe["inputs"]["image"]["preprocess"]["size"] == [16, 16]
    assert recipe["heads"]["label"]["class_names"] == ["bright", "dark"]
    assert recipe["data"]["splits"]["train"] == "photos_train.csv"
    with open("photos_train.csv") as f:       # relative to the manifest
        assert f.read().splitlines()[1].startswith("photos/")
    from keras_mm.data.manifest import Manifest
    listed = []
    for split in ("train", "val", "test"):
        m = Manifest.read(recipe["data"]["splits"][split])
        listed += m.paths("image")
    assert sorted(listed) == sorted(
        str(tmp_path / "photos" / c / f"{i}.png") for c in gen.CLASSES
        for i in range(10))
    assert recipe["data"]["allow_paths_outside"] is False
    assert main(["init", "photos", "--out", "photos.yaml"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err


def test_training_fits_the_data_size():
    from keras_mm.inference.recipe_writer import training_section
    small, large = training_section(20), training_section(10_000)
    assert (small["batch_size"], small["epochs"]) == (8, 20)
    assert (large["batch_size"], large["epochs"]) == (32, 5)
    assert training_section(800)["epochs"] == 8        # 25 steps an epoch


def test_init_with_data_outside_the_recipe_folder(tmp_path):
    data = gen.image_folder(str(tmp_path / "data" / "photos"), per_class=5)
    result = init_recipe(data, out=str(tmp_path / "elsewhere" / "r.yaml"))
    assert result["recipe"]["data"]["allow_paths_outside"] is True
    with open(result["manifests"]["train"]) as f:
        assert os.path.isabs(f.read().splitlines()[1].split(",")[0])


def test_inspect_shows_the_inference_and_writes_nothing(tmp_path, capsys):
    csv_path = gen.six_modality_csv(str(tmp_path / "six"), rows=12)
    before = sorted(os.listdir(tmp_path / "six"))
    assert main(["data", "inspect", csv_path]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted(os.listdir(tmp_path / "six")) == before
    expected = json.loads(json.dumps(infer_dataset(csv_path)))
    summary = shown["inference"].pop("summary")
    assert shown["inference"] == expected
    assert shown["kind"] == "manifest" and shown["rows"] == 12
    kinds = {c: v["modality"] for c, v in expected["columns"].items()}
    assert kinds == {"photo": "image", "speech": "audio", "clip": "video",
                     "imu": "sensor", "caption": "text",
                     "weight": "numeric", "colour": "categorical"}
    assert any(line.startswith("  imu: sensor csv series [T, 3]")
               for line in summary)


def test_examples_ship_and_copy(tmp_path, capsys):
    names = example_names()
    assert {"demo", "av_mnist"} <= set(names)
    path = copy_example("demo", out=str(tmp_path / "d.yaml"))
    with open(os.path.join(REPO, "recipes", "demo.yaml"), "rb") as f:
        assert open(path, "rb").read() == f.read()
    assert main(["init", "--example", "nope"]) == 1
    err = capsys.readouterr().err
    assert "'nope' is not one of the shipped recipes: " + ", ".join(
        names) in err
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    assert "demo" in capsys.readouterr().out


def test_wheel_holds_the_recipes(tmp_path):
    """The wheel built from (a copy of) the repository's sources has every
    shipped recipe."""
    source = tmp_path / "source"
    shutil.copytree(os.path.join(REPO, "keras_mm"), source / "keras_mm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
         str(source)], capture_output=True, text=True, timeout=300,
        cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = os.listdir(tmp_path / "wheel")
    names = zipfile.ZipFile(tmp_path / "wheel" / wheel).namelist()
    shipped = sorted(n.split("/")[-1][:-5] for n in names
                     if n.startswith("keras_mm/recipes/examples/"))
    assert shipped == example_names()


# -- end to end (slow) --------------------------------------------------------


def _train_export_verify(recipe_path, tmp_path, capsys):
    assert main(["train", recipe_path, "--runs-dir",
                 str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    exported = [line.split("exported to ", 1)[1] for line in out.splitlines()
                if line.startswith("exported to ")]
    assert len(exported) == 1, out
    assert main(["verify", exported[0]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    return exported[0]


@pytest.mark.slow
def test_init_train_export_verify_folder(tmp_path, capsys, monkeypatch):
    gen.image_folder(str(tmp_path / "photos"), per_class=12)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "photos"]) == 0
    capsys.readouterr()
    _train_export_verify("photos.yaml", tmp_path, capsys)


@pytest.mark.slow
def test_init_train_export_verify_six_modalities(tmp_path, capsys,
                                                 monkeypatch):
    gen.six_modality_csv(str(tmp_path / "six"), rows=24)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "six/data.csv", "--name", "six"]) == 0
    out = capsys.readouterr().out
    for column in ("photo", "speech", "clip", "imu", "caption", "tabular"):
        assert f"  {column}:\n" in out
    _train_export_verify("six.yaml", tmp_path, capsys)


def test_init_needs_data_or_example(capsys):
    assert main(["init"]) == 1
    assert "give DATA" in capsys.readouterr().err


def test_init_bad_data_is_one_clear_line(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("size,colour\n1.5,red\n2.5,blue\n")
    assert main(["init", str(table), "--out", str(tmp_path / "r.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --label COLUMN" in err[0], err
    assert not (tmp_path / "r.yaml").exists()
    assert main(["init", str(tmp_path / "absent")]) == 1
    assert "absent: no such file or folder" in capsys.readouterr().err
