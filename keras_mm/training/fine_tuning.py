"""Fine-tuning controls of a run: a frozen warm-up and per-tower
learning-rate multipliers (`training.fine_tuning` of a recipe).

```yaml
training:
  fine_tuning:
    frozen_epochs: 1          # the towers below are frozen for the first N
                              # epochs, then train (0: no warm-up)
    towers: [text]            # inputs whose towers the warm-up freezes;
                              # default: the pretrained ones (preset / hub)
    learning_rate_multipliers: {text: 0.1}   # tower variables use lr x m
```

They work for any tower (scratch or pretrained) and together: the usual
two-phase schedule is a frozen warm-up, then the tower trains at a lower
rate (`frozen_epochs: 1` with `learning_rate_multipliers: {text: 0.1}`).

- Multipliers: the optimizer becomes `<Name>WithMultipliers`
  (`keras_mm.training.optimizers.LearningRateMultipliers`), keyed by the
  variable path prefix `<input>_tower/`; every variable of the tower must
  have its path under it (`check_multiplier_paths`: a tower creates its
  sublayers, a keras-hub backbone included, inside its own name scope,
  e.g. `with keras.name_scope(self.name): ...`). They hold in every epoch,
  the warm-up included, and under any strategy.
- Warm-up: `FrozenWarmup`, a callback, sets `tower.trainable = False` at
  the start of each epoch below `frozen_epochs` and puts each layer's and
  variable's own trainable flag back (so `trainable_blocks` and LoRA
  settings of a tower survive) when the towers train again. It keeps one
  train function per state (`model.train_function`, which `fit` looks up
  at every step; `jit_compile` holds). The optimizer is built over every
  variable that will ever train before the first freeze, so the unfrozen
  towers have their slots. At each epoch end the flags are put back before
  the checkpoint, early-stopping and backup callbacks run, so `best.keras`
  records the towers' own `trainable` settings. A run resumed from its
  backup at epoch >= `frozen_epochs` starts unfrozen; one resumed inside
  the warm-up freezes again: the resumed run's weights are those of an
  uninterrupted one. The run's notes (run.json `notes`) and its log say
  when the towers were frozen and unfrozen.
- The keras_mm distributed loop (`fit_distributed`, used under
  `MultiWorkerMirroredStrategy` and for boolean inputs under several
  replicas) traces its step once, so a warm-up is refused there with a
  ConfigError (`refuse_custom_loop`); multipliers work there.
"""

import contextlib

import keras

from keras_mm.errors import ConfigError
from keras_mm.recipes.schema import warmup_towers

PATH = "training.fine_tuning"


def tower_name(input_name):
    """The layer name of an input's tower in a keras_mm model."""
    return f"{input_name}_tower"


def multiplier_prefixes(fine_tuning):
    """`{"<input>_tower/": m}` of a normalized `training.fine_tuning`
    section (empty without multipliers)."""
    multipliers = (fine_tuning or {}).get("learning_rate_multipliers") or {}
    return {f"{tower_name(name)}/": float(m)
            for name, m in multipliers.items()}


def _tower(model, input_name):
    try:
        return model.get_layer(tower_name(input_name))
    except ValueError:
        return None


def check_multiplier_paths(model, fine_tuning):
    """Every variable of a tower with a multiplier has its path under
    `<input>_tower/` (the optimizer matches variables by path).

    Raises:
        ConfigError: at `training.fine_tuning.learning_rate_multipliers.
            <input>`, naming the variables outside the prefix.
    """
    multipliers = (fine_tuning or {}).get("learning_rate_multipliers") or {}
    for name in multipliers:
        tower = _tower(model, name)
        if tower is None:
            continue        # another run's input (a single-input model)
        prefix = f"{tower.name}/"
        outside = [v.path for v in tower.weights
                   if not v.path.startswith(prefix)]
        if outside:
            shown = ", ".join(outside[:3]) + (
                f" and {len(outside) - 3} more" if len(outside) > 3 else "")
            raise ConfigError(
                f"{PATH}.learning_rate_multipliers.{name}",
                f"{len(outside)} variables of the {tower.name} layer "
                f"({type(tower).__name__}) have paths outside {prefix!r} "
                f"({shown}), so the multiplier cannot reach them; the tower "
                "must create its sublayers inside its own name scope "
                "(`with keras.name_scope(self.name): ...`)")


class FrozenWarmup(keras.callbacks.Callback):
    """Freezes some layers (towers) for the first epochs of `fit`.

    At the start of epoch `e < frozen_epochs` each layer of `towers` gets
    `trainable = False`; from epoch `frozen_epochs` on it trains with the
    trainable flags it had when training began (its sublayers' and
    variables' own flags included: `trainable_blocks`, LoRA). The model's
    train function is rebuilt for each state (once; then reused), as Keras
    needs after a `trainable` change. At each epoch end the flags are put
    back (the train function is swapped again at the next epoch start), so
    callbacks after this one (checkpoints, backups, early stopping) save the
    model with its own settings: put it first in the callback list.

    The optimizer is built at `on_train_begin`, before any freeze, over the
    model's trainable variables (when `fit` has not built it already), so
    the layers that are unfrozen later have their optimizer slots. Resuming
    (`initial_epoch`, `keras.callbacks.BackupAndRestore`) needs nothing:
    the state follows the epoch number. Not for a custom loop that traces
    its train step once (`fit_distributed`).

    Args:
        towers: the layers to freeze, as names (`model.get_layer`) or
            layers.
        frozen_epochs: number of warm-up epochs (>= 0).
        say: optional `say(message)` for the one-line notes (also kept in
            `notes`).

    Example:

    >>> warmup = FrozenWarmup(["text_tower"], frozen_epochs=1)
    >>> model.fit(ds, epochs=3, callbacks=[warmup])   # doctest: +SKIP
    >>> warmup.notes                                   # doctest: +SKIP
    ['fine_tuning: text_tower frozen for epochs 1-1', 'fine_tuning: ...']
    """

    def __init__(self, towers, frozen_epochs, say=None):
        super().__init__()
        self._first_epoch = None
        if isinstance(towers, (str, keras.layers.Layer)):
            towers = [towers]
        towers = list(towers)
        if not towers:
            raise ValueError("FrozenWarmup: towers=[] names no layer; give "
                             "the layers (or layer names) to freeze")
        if isinstance(frozen_epochs, bool) or not isinstance(
                frozen_epochs, int) or frozen_epochs < 0:
            raise ValueError(
                f"FrozenWarmup: frozen_epochs={frozen_epochs!r} is not an "
                "integer >= 0; use e.g. 1")
        self.towers = towers
        self.frozen_epochs = frozen_epochs
        self.say = say
        self.notes = []
        self.frozen = False
        self._layers = None
        self._saved = None
        self._functions = {}

    def _note(self, message):
        self.notes.append(message)
        if self.say is not None:
            self.say(message)

    def _resolve(self):
        layers = []
        for tower in self.towers:
            if isinstance(tower, keras.layers.Layer):
                layers.append(tower)
                continue
            try:
                layers.append(self.model.get_layer(tower))
            except ValueError:
                raise ValueError(
                    f"FrozenWarmup: towers={self.towers!r}: the model has no "
                    f"layer {tower!r}; its layers are "
                    f"{[layer.name for layer in self.model.layers]}") \
                    from None
        return layers

    def _names(self):
        return ", ".join(layer.name for layer in self._layers)

    def _snapshot(self):
        """The trainable flags of every sublayer (parents before children)
        and variable of the towers."""
        layers, variables = [], []
        for tower in self._layers:
            layers.extend((layer, layer.trainable)
                          for layer in tower._flatten_layers())
            variables.extend((v, v.trainable) for v in tower.variables)
        return layers, variables

    def _restore(self):
        layers, variables = self._saved
        for layer, trainable in layers:     # a parent's setter recurses,
            layer.trainable = trainable     # its children come after it
        for variable, trainable in variables:
            variable.trainable = trainable

    def _set_state(self, frozen):
        if frozen:
            for tower in self._layers:
                tower.trainable = False
        else:
            self._restore()

    def _use_function(self, frozen):
        function = self._functions.get(frozen)
        if function is None:
            # Returns None on the first build (Keras 3.15): read it back.
            self.model.make_train_function(force=True)
            function = self.model.train_function
            self._functions[frozen] = function
        self.model.train_function = function

    def on_train_begin(self, logs=None):
        if self._saved is not None:
            self._restore()     # a previous fit stopped inside the warm-up
        self._layers = self._resolve()
        self._saved = self._snapshot()
        self.frozen = False
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            # Over everything that will ever train, before the first freeze
            # (`fit` has usually built it already, in the same state).
            strategy = getattr(self.model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else \
                    contextlib.nullcontext():
                optimizer.build(self.model.trainable_variables)
        self._functions = {}    # made here, traced at their first call
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.frozen_epochs
        if self._first_epoch is None:
            self._first_epoch = epoch
            if frozen:
                self._note(f"fine_tuning: {self._names()} frozen for epochs "
                           f"{epoch + 1}-{self.frozen_epochs} (warm-up), "
                           "then trained")
            elif self.frozen_epochs and epoch > 0:
                self._note(f"fine_tuning: {self._names()} trained from epoch"
                           f" {epoch + 1} (the {self.frozen_epochs}-epoch "
                           "warm-up ended before the resume)")
        elif not frozen and epoch == self.frozen_epochs:
            self._note(f"fine_tuning: {self._names()} unfrozen at the start"
                       f" of epoch {epoch + 1}")
        self._set_state(frozen)
        self._use_function(frozen)
        self.frozen = frozen

    def on_epoch_end(self, epoch, logs=None):
        if self.frozen:
            self._restore()     # the savers after this callback see them

    def on_train_end(self, logs=None):
        if self._saved is None:
            return
        self._restore()
        self.frozen = False
        self.model.train_function = self._functions.get(False)


def warmup_callback(recipe, model, say=None):
    """The `FrozenWarmup` of a recipe's `training.fine_tuning` for `model`
    (None without a warm-up); checks the multipliers' tower paths first.

    The towers are those of `warmup_towers` among the recipe's inputs (a
    single-input run of the scoreboard keeps only its own).
    """
    section = recipe["training"].get("fine_tuning")
    if not section:
        return None
    check_multiplier_paths(model, section)
    towers = [tower_name(name)
              for name in warmup_towers(section, recipe["inputs"])
              if _tower(model, name) is not None]
    if not section.get("frozen_epochs") or not towers:
        return None
    return FrozenWarmup(towers, int(section["frozen_epochs"]), say=say)


def refuse_custom_loop(warmup, custom_loop, why=""):
    """A warm-up cannot run in the keras_mm distributed loop.

    Raises:
        ConfigError: at `training.fine_tuning.frozen_epochs` when both.
    """
    if warmup is None or not custom_loop:
        return
    raise ConfigError(
        f"{PATH}.frozen_epochs",
        f"a frozen warm-up ({warmup.frozen_epochs} epochs) cannot run in the "
        "keras_mm distributed loop" + (f" ({why})" if why else "") +
        ", which traces its train step once; set frozen_epochs: 0 (keep "
        "learning_rate_multipliers, which work there, e.g. 0 for the "
        "frozen phase) or train on one device / with MirroredStrategy")


__all__ = ["FrozenWarmup", "check_multiplier_paths", "multiplier_prefixes",
           "refuse_custom_loop", "tower_name", "warmup_callback"]
