"""A recipe's `distill:` section in a run (`keras_mm.compression.
distillation` has the loss).

- `check_teacher(recipe)`: the teacher's finished run folder, checked
  before any work: the student takes the teacher's inputs (names,
  modalities, preprocessing), and at least one classification or binary
  head of the student has the teacher's head of that name and classes;
- `teacher_preprocessors(teacher)`: the teacher's fitted preprocessors,
  which the student reuses (one vocabulary, one normalization);
- `attach(model, teacher)`: the loaded, frozen teacher on the student;
- `teacher_metrics(teacher, run)`: the teacher on the student's
  evaluation splits (the scoreboard's `teacher` rows).
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
    missing = sorted(set(theirs["inputs"]) - set(recipe["inputs"]))
    if missing:
        raise ConfigError("inputs", f"the teacher {run_dir} also takes "
                          f"{', '.join(missing)}; a student takes the "
                          "teacher's inputs (it sees the same batches)")
    for name, entry in recipe["inputs"].items():
        other = theirs["inputs"].get(name)
        if other is None:
            raise ConfigError(f"inputs.{name}", f"the teacher {run_dir} has "
                              f"no input {name!r}; its inputs are "
                              f"{', '.join(theirs['inputs'])}")
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
                   settings=dict(settings))


def teacher_preprocessors(teacher):
    from keras_mm.training import run_preprocessors

    return run_preprocessors.load_preprocessors(
        os.path.join(teacher.run_dir, run_preprocessors.PREPROCESSORS_FILE),
        order=list(teacher.recipe["inputs"]))


def attach(model, teacher):
    """Loads the teacher's best model and attaches it to `model`."""
    from keras_mm.compression.distillation import Distillation
    from keras_mm.training.finished_run import load_run, model_input_names

    if teacher is None:
        return None
    teacher.model = load_run(teacher.run_dir)[1]
    extra = sorted(set(model_input_names(teacher.model)) -
                   set(model_input_names(model)))
    if extra:
        raise ConfigError("fusion.presence_mask", f"the teacher's model "
                          f"takes {', '.join(extra)} and the student's does "
                          "not; give both the same presence mask setting")
    settings = teacher.settings
    return Distillation(teacher.model, teacher.heads,
                        settings["temperature"], settings["alpha"]).attach(
                            model)


def teacher_metrics(teacher, run):
    """The teacher's metrics on the student's evaluation splits (the same
    batches: the preprocessors and inputs are the teacher's)."""
    from keras_mm.builder import model_spec
    from keras_mm.training.finished_run import evaluate_splits

    return evaluate_splits(
        teacher.model, run.recipe, model_spec(teacher.model),
        run.preprocessors, run.recipe["evaluation"]["splits"],
        run.training["batch_size"], pipelines=run.pipelines)


def alone_recipe(recipe):
    """The student's recipe without the teacher (its own preprocessing is
    the teacher's, passed in), for the scoreboard's comparison."""
    import copy

    out = copy.deepcopy(recipe)
    out.pop("distill")
    out["name"] = f"{recipe['name']}_alone"
    out["evaluation"] = dict(out["evaluation"], compare_unimodal=False)
    return out
