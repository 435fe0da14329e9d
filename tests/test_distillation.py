"""Distillation (`distill:`, `keras_mm.compression.Distillation`): the loss
against a NumPy reference (directly and through a real train step), the
teacher kept out of the student's checkpoint, and a student run on the
demo set with its scoreboard (teacher, student, student alone)."""

import copy
import json
import os

import keras
import numpy as np
import pytest

from keras_mm.builder.multimodal_model import MultimodalModel
from keras_mm.compression import Distillation
from keras_mm.compression.distillation import soft_target_loss
from keras_mm.errors import ConfigError
from test_training import tiny_recipe


def numpy_soft_loss(teacher, student, t):
    def soft(p):
        z = np.log(p + 1e-7) / t
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    q_t, q_s = soft(teacher), soft(student)
    return t * t * np.mean(np.sum(q_t * (np.log(q_t) - np.log(q_s)), -1))


def probabilities(rng, n, k):
    z = rng.normal(size=(n, k)) * 2
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_soft_target_loss_matches_numpy(t):
    rng = np.random.default_rng(0)
    teacher, student = probabilities(rng, 16, 5), probabilities(rng, 16, 5)
    got = float(soft_target_loss(teacher, student, t))
    assert got == pytest.approx(numpy_soft_loss(teacher, student, t),
                                rel=1e-4)
    assert float(soft_target_loss(teacher, teacher, t)) == pytest.approx(
        0.0, abs=1e-5)
    # a binary head's sigmoid p is the two-class [1 - p, p]
    p_t, p_s = teacher[:, :1], student[:, :1]
    got = float(soft_target_loss(p_t, p_s, t, "binary"))
    assert got == pytest.approx(numpy_soft_loss(
        np.concatenate([1 - p_t, p_t], -1),
        np.concatenate([1 - p_s, p_s], -1), t), rel=1e-4)


def pair(seed_student=1, seed_teacher=2):
    inputs = keras.Input((3,), name="x")

    def head(seed, name):
        return keras.layers.Dense(
            4, activation="softmax", name="y",
            kernel_initializer=keras.initializers.GlorotUniform(seed))(
                keras.layers.Dense(6, name=f"{name}_hidden")(inputs))

    student = MultimodalModel({"x": inputs}, {"y": head(seed_student, "s")})
    teacher = keras.Model({"x": inputs}, {"y": head(seed_teacher, "t")})
    student.compile(keras.optimizers.SGD(0.1),
                    {"y": "sparse_categorical_crossentropy"})
    return student, teacher


def numpy_cross_entropy(probs, labels):
    return float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))


def test_the_training_loss_is_alpha_labels_plus_soft_targets():
    rng = np.random.default_rng(0)
    x = {"x": rng.normal(size=(8, 3)).astype("float32")}
    y = {"y": rng.integers(0, 4, size=8)}
    student, teacher = pair()
    alpha, t = 0.3, 3.0
    Distillation(teacher, {"y": "classification"}, t, alpha).attach(student)
    p_s = student(x)["y"].numpy()
    p_t = teacher(x)["y"].numpy()
    labels = numpy_cross_entropy(p_s, y["y"])
    expected = alpha * labels + (1 - alpha) * numpy_soft_loss(p_t, p_s, t)
    got = student.compute_loss(x=x, y=y, y_pred=student(x), training=True)
    assert float(got) == pytest.approx(expected, rel=1e-4)
    # evaluation keeps the label loss alone
    got = student.compute_loss(x=x, y=y, y_pred=student(x), training=False)
    assert float(got) == pytest.approx(labels, rel=1e-4)
    # a real train step reports that loss (on the weights before the step)
    # and moves the student only
    before = [w.numpy().copy() for w in teacher.weights]
    logs = student.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert all(np.array_equal(a, w.numpy())
               for a, w in zip(before, teacher.weights))
    # alpha 1 is plain training
    plain, teacher = pair()
    Distillation(teacher, {"y": "classification"}, t, 1.0).attach(plain)
    assert float(plain.compute_loss(x=x, y=y, y_pred=plain(x))) == \
        pytest.approx(numpy_cross_entropy(plain(x)["y"].numpy(), y["y"]),
                      rel=1e-4)


def three_inputs(names, width, seed, model_class=keras.Model):
    """softmax(Dense(concat(input_i * presence_i))) on 2-wide inputs."""
    inputs = {n: keras.Input((2,), name=n) for n in names}
    inputs["presence"] = keras.Input((width,), name="presence")
    parts = [inputs[n] * inputs["presence"][:, i:i + 1]
             for i, n in enumerate(names)]
    out = keras.layers.Dense(
        4, activation="softmax", name="y",
        kernel_initializer=keras.initializers.GlorotUniform(seed))(
            keras.layers.Concatenate()(parts))
    return model_class(inputs, {"y": out})


def test_a_student_on_fewer_inputs_trains_on_its_cut_of_the_batch():
    rng = np.random.default_rng(3)
    x = {n: rng.normal(size=(8, 2)).astype("float32") for n in "abc"}
    # each presence column differs, so a wrong gather changes the loss
    x["presence"] = (rng.random((8, 3)) > 0.4).astype("float32")
    y = {"y": rng.integers(0, 4, size=8)}
    teacher = three_inputs("abc", 3, 2)
    alpha, t = 0.4, 2.0

    def student_and_expected(columns):
        student = three_inputs("ac", 2, 1, MultimodalModel)
        student.compile(keras.optimizers.SGD(0.1),
                        {"y": "sparse_categorical_crossentropy"})
        mine = {"a": x["a"], "c": x["c"],
                "presence": x["presence"][:, columns]}
        p_s = student(mine)["y"].numpy()
        p_t = teacher(x)["y"].numpy()
        return student, (alpha * numpy_cross_entropy(p_s, y["y"]) + (
            1 - alpha) * numpy_soft_loss(p_t, p_s, t))

    student, expected = student_and_expected([0, 2])
    _, other = student_and_expected([0, 1])
    assert abs(expected - other) > 1e-3
    Distillation(teacher, {"y": "classification"}, t, alpha,
                 student_inputs=["a", "c", "presence"],
                 teacher_inputs=["a", "b", "c", "presence"],
                 presence_columns=[0, 2]).attach(student)
    logs = student.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    # the split is the student's inputs, presence gathered
    mine, theirs = Distillation.of(student).split(x)
    assert sorted(mine) == ["a", "c", "presence"] and theirs is not x
    np.testing.assert_array_equal(mine["presence"], x["presence"][:, [0, 2]])


def test_the_teacher_stays_out_of_the_students_checkpoint(tmp_path):
    student, teacher = pair()
    alone = len(student.weights)
    Distillation(teacher, {"y": "classification"}).attach(student)
    assert len(student.weights) == alone
    path = os.fspath(tmp_path / "student.keras")
    student.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == alone
    assert Distillation.of(loaded) is None
    assert Distillation.of(student) is not None


def test_bad_settings_are_refused():
    student, teacher = pair()
    with pytest.raises(ValueError, match="alpha"):
        Distillation(teacher, {"y": "classification"}, 2.0, 1.5)
    with pytest.raises(ValueError, match="classification or binary"):
        Distillation(teacher, {})


# -- a student run ------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    from keras_mm.training import train

    root = tmp_path_factory.mktemp("distill")
    recipe = tiny_recipe(root / "data", name="teacher", epochs=3,
                         deterministic=True)
    recipe["inputs"]["text"]["tower"]["dim"] = 16
    result = train(recipe, runs_dir=root / "runs", export=False, verbose=0)
    return root, recipe, result


def student_recipe(teacher_recipe, root, name="student", **distill):
    recipe = copy.deepcopy(teacher_recipe)
    recipe["name"] = name
    recipe["inputs"]["text"]["tower"]["dim"] = 4
    recipe["inputs"]["sensor"]["tower"]["dim"] = 4
    recipe["distill"] = {"teacher": os.fspath(root / "runs" / "teacher"),
                         "temperature": 2.0, "alpha": 0.5, **distill}
    return recipe


def test_a_student_run_reuses_the_teachers_preprocessors_and_scores_all_three(
        teacher_run):
    from keras_mm.training import evaluate, train

    root, recipe, teacher = teacher_run
    result = train(student_recipe(recipe, root), runs_dir=root / "runs",
                   export=False, verbose=0)
    models = [(row["model"], row["split"]) for row in result.scoreboard]
    assert models == [("teacher", "val"), ("teacher", "test"),
                      ("student", "val"), ("student", "test"),
                      ("student alone", "val"), ("student alone", "test")]
    rows = {(r["model"], r["split"]): r for r in result.scoreboard}
    # the teacher's rows are the teacher's own metrics on these splits
    assert rows[("teacher", "test")]["label_accuracy"] == pytest.approx(
        teacher.metrics["test"]["heads"]["label"]["accuracy"], abs=1e-6)
    with open(os.path.join(teacher.run_dir, "preprocessors.json")) as f:
        theirs = json.load(f)
    with open(os.path.join(result.run_dir, "preprocessors.json")) as f:
        assert json.load(f) == theirs
    # the checkpoint is the student alone: its tower width, not the teacher's
    model = keras.saving.load_model(os.path.join(result.run_dir,
                                                 "best.keras"))
    assert model.get_layer("text_tower").compute_output_shape(
        (None, 8))[-1] == 4
    # the student alone trained the same student without the soft targets
    alone = evaluate(os.path.join(result.run_dir, "alone"), splits=["test"])
    assert rows[("student alone", "test")]["label_accuracy"] == \
        pytest.approx(alone["test"]["heads"]["label"]["accuracy"], abs=1e-6)
    assert rows[("student", "test")]["loss"] != pytest.approx(
        rows[("student alone", "test")]["loss"], abs=1e-6)


def test_a_student_with_fewer_inputs_than_its_teacher(teacher_run):
    """The teacher reads text + sensor; the student text alone. It trains
    on the teacher's soft targets (its loss differs from the student
    alone's), keeps the teacher's text preprocessor only, and the
    scoreboard's teacher rows are the teacher's own metrics."""
    from keras_mm.training import train

    root, recipe, teacher = teacher_run
    student = student_recipe(recipe, root, "text_student")
    del student["inputs"]["sensor"]
    student["fusion"] = None     # one input: no fusion
    result = train(student, runs_dir=root / "runs", export=False, verbose=0)
    rows = {(r["model"], r["split"]): r for r in result.scoreboard}
    assert rows[("teacher", "test")]["label_accuracy"] == pytest.approx(
        teacher.metrics["test"]["heads"]["label"]["accuracy"], abs=1e-6)
    assert rows[("student", "test")]["loss"] != pytest.approx(
        rows[("student alone", "test")]["loss"], abs=1e-6)
    with open(os.path.join(teacher.run_dir, "preprocessors.json")) as f:
        theirs = json.load(f)
    with open(os.path.join(result.run_dir, "preprocessors.json")) as f:
        mine = json.load(f)
    assert list(mine) == ["text"] and mine["text"] == theirs["text"]
    model = keras.saving.load_model(os.path.join(result.run_dir,
                                                 "best.keras"))
    assert [t.name.split(":")[0] for t in model.inputs] == ["text"]


def test_a_student_with_other_preprocessing_names_the_key(teacher_run):
    from keras_mm.training import train

    root, recipe, _ = teacher_run
    student = student_recipe(recipe, root, "bad")
    student["inputs"]["text"]["preprocess"]["max_len"] = 12
    with pytest.raises(ConfigError) as info:
        train(student, runs_dir=root / "runs", export=False, verbose=0)
    assert info.value.key_path == "inputs.text.preprocess"
    assert "teacher" in str(info.value)
    student = student_recipe(recipe, root, "bad", teacher="no_such_run")
    with pytest.raises(ConfigError) as info:
        train(student, runs_dir=root / "runs", export=False, verbose=0)
    assert info.value.key_path == "distill.teacher"
    student = student_recipe(recipe, root, "bad")
    student["inputs"]["image"] = dict(student["inputs"]["sensor"])
    with pytest.raises(ConfigError, match="no input 'image'") as info:
        train(student, runs_dir=root / "runs", export=False, verbose=0)
    assert info.value.key_path == "inputs.image"
