"""A recipe's `distill:` section in a run (`keras_mm.compression.
distillation` has the loss).

- `check_teacher(recipe)`: the teacher's finished run folder, checked
  before any work: each input of the student is one of the teacher's
  (name, modality, source, preprocessing), and at least one
  classification or binary head of the student has the teacher's head of
  that name and classes;
- `teacher_preprocessors(teacher)`: the teacher's fitted preprocessors,
  which the student reuses (one vocabulary, one normalization), cut to
  the student's inputs;
- `attach(model, teacher)`: the loaded, frozen teacher on the student;
- `fit_pipeline(teacher, run)`: the train split in the teacher's inputs,
  for a student that takes fewer (None when both take the same);
- `teacher_metrics(teacher, run)`: the teacher on the student's
  evaluation splits (the scoreboard's `teacher` rows).

A student with fewer inputs than its teacher (the modalities a device
has) trains on batches that carry the teacher's inputs as well; its
train step cuts each batch to its own (`Distillation.split`). Its
validation, evaluation, preprocessors and export are its own inputs'.
"""

import dataclasses
import os

from keras_mm.errors import ConfigError


@dataclasses.dataclass
class Teacher:
    run_dir: str
    recipe: dict
    heads: dict          # {head: "classification" | "binary"}
    settings: dict       # the recipe's distill section
    student_order: list  # the student's inputs, in its recipe's order
    model: object = None


def _same(head, theirs):
    keys = ("type", "num_classes", "class_names")
    return all(head.get(k) == theirs.get(k) for k in keys)


def check_teacher(recipe):
    """The `Teacher` of `recipe["distill"]`, or None without one; raises a
    `ConfigError` naming the key that does not match the teacher."""
    from keras_mm.compression.distillation import SOFT_HEAD_TYPES
    from keras_mm.recipes import load_recipe
    from keras_mm.training.run_folder import RECIPE_FILE, finished_run
    from keras_mm.training.tower_init import resolve_run

    settings = recipe.get("distill")
    if not settings:
        return None
    run_dir = resolve_run(settings["teacher"], recipe, "distill.teacher")
    if finished_run(run_dir) is None:
        raise ConfigError("distill.teacher", f"{run_dir} holds no finished "
                          "run; finish training the teacher first")
    theirs = load_recipe(os.path.join(run_dir, RECIPE_FILE))
    for name, entry in recipe["inputs"].items():
        other = theirs["inputs"].get(name)
        if other is None:
            raise ConfigError(f"inputs.{name}", f"the teacher {run_dir} has "
                              f"no input {name!r}; its inputs are "
                              f"{', '.join(theirs['inputs'])} (a student "
                              "takes some or all of them)")
        for key in ("modality", "source", "preprocess"):
            if entry.get(key) != other.get(key):
                raise ConfigError(
                    f"inputs.{name}.{key}", f"{entry.get(key)!r} here, "
                    f"{other.get(key)!r} in the teacher {run_dir}; the "
                    "student reuses the teacher's fitted preprocessors")
    heads = {h: spec["type"] for h, spec in recipe["heads"].items()
             if spec["type"] in SOFT_HEAD_TYPES and h in theirs["heads"]
             and _same(spec, theirs["heads"][h])}
    if not heads:
        raise ConfigError("distill", f"no classification or binary head of "
                          f"this recipe has the teacher's ({run_dir}) head "
                          "of the same name, type and classes")
    return Teacher(run_dir=run_dir, recipe=theirs, heads=heads,
                   settings=dict(settings),
                   student_order=list(recipe["inputs"]))


def teacher_preprocessors(teacher, every=False):
    """The teacher's fitted preprocessors (`{input: preprocessor}`) of the
    student's inputs, in the student's order; `every`: all the teacher's,
    in its order."""
    from keras_mm.training import run_preprocessors

    loaded = run_preprocessors.load_preprocessors(
        os.path.join(teacher.run_dir, run_preprocessors.PREPROCESSORS_FILE),
        order=list(teacher.recipe["inputs"]))
    return loaded if every else {n: loaded[n] for n in teacher.student_order}


def teacher_format_recipe(teacher, recipe):
    """The student's recipe (data, training, labels) read with the
    teacher's inputs and presence setting: the recipe of the batches
    the teacher takes. A modality dropout rate for every input applies to
    the student's inputs only (the teacher's others are its help)."""
    import copy

    out = copy.deepcopy(recipe)
    out["inputs"] = copy.deepcopy(teacher.recipe["inputs"])
    out["fusion"] = dict(out.get("fusion") or {}, presence_mask=bool(
        (teacher.recipe.get("fusion") or {}).get("presence_mask")
        or (recipe.get("fusion") or {}).get("presence_mask")))
    dropout = (recipe.get("training") or {}).get("modality_dropout")
    if dropout is not None and not isinstance(dropout, dict):
        out["training"]["modality_dropout"] = {
            n: dropout for n in recipe["inputs"]}
    return out


def split_inputs(teacher, model):
    """`(student inputs, teacher inputs, presence columns)` for
    `Distillation`, or None when the two models take the same inputs.

    The presence columns are the student's inputs' places in the
    teacher's input order (the batch's presence order)."""
    from keras_mm.training.finished_run import model_input_names

    student = model_input_names(model)
    theirs = model_input_names(teacher.model)
    if sorted(student) == sorted(theirs):
        return None
    order = list(teacher.recipe["inputs"])
    return student, theirs, [order.index(n) for n in teacher.student_order]


def fit_pipeline(teacher, run):
    """The train split's `Pipeline` in the teacher's inputs (and the
    presence input, when either model takes it), validated, for a student
    whose inputs differ from the teacher's; None when they are the same.
    Its bad-input report (written after the student's) covers both."""
    from keras_mm.training import run_data

    split = None if teacher is None else split_inputs(teacher, run.model)
    if split is None:
        return None
    recipe = teacher_format_recipe(teacher, run.recipe)
    names = list(dict.fromkeys(split[1] + split[0]))
    # make_pipeline reads the spec's fusion.presence_mask: the recipe's
    pipe = run_data.make_pipeline(
        recipe, "train", teacher_preprocessors(teacher, every=True), recipe,
        input_names=names, report_dir=run.work_dir)
    pipe.validate()
    return pipe


def attach(model, teacher):
    """Loads the teacher's best model and attaches it to `model`."""
    from keras_mm.compression.distillation import Distillation
    from keras_mm.training.finished_run import load_run

    if teacher is None:
        return None
    teacher.model = load_run(teacher.run_dir)[1]
    student, theirs, columns = split_inputs(teacher, model) or (
        None, None, None)
    settings = teacher.settings
    return Distillation(teacher.model, teacher.heads,
                        settings["temperature"], settings["alpha"],
                        student_inputs=student, teacher_inputs=theirs,
                        presence_columns=columns).attach(model)


def teacher_metrics(teacher, run):
    """The teacher's metrics on the student's evaluation splits: the same
    rows, through the student's pipelines when the two take the same
    inputs, else through the teacher's inputs and preprocessors."""
    from keras_mm.builder import model_spec
    from keras_mm.training.finished_run import evaluate_splits

    if split_inputs(teacher, run.model) is None:
        recipe, preprocessors, pipelines = (run.recipe, run.preprocessors,
                                            run.pipelines)
    else:
        recipe = teacher_format_recipe(teacher, run.recipe)
        preprocessors = teacher_preprocessors(teacher, every=True)
        pipelines = None
    return evaluate_splits(
        teacher.model, recipe, model_spec(teacher.model), preprocessors,
        run.recipe["evaluation"]["splits"], run.training["batch_size"],
        pipelines=pipelines)


def alone_recipe(recipe):
    """The student's recipe without the teacher (its own preprocessing is
    the teacher's, passed in), for the scoreboard's comparison."""
    import copy

    out = copy.deepcopy(recipe)
    out.pop("distill")
    out["name"] = f"{recipe['name']}_alone"
    out["evaluation"] = dict(out["evaluation"], compare_unimodal=False)
    return out
