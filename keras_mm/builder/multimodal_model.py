import json

import keras


@keras.saving.register_keras_serializable(package="keras_mm")
class MultimodalModel(keras.Model):
    """A functional model that also carries its builder spec.

    `keras_mm.build_model` returns one. It behaves exactly like the
    functional `keras.Model` it wraps (same inputs, outputs, layers and
    config); it only adds the normalized spec (`spec_json`, a JSON string)
    to the config so that a `.keras` file keeps it:
    `keras_mm.builder.model_spec(keras.saving.load_model(path))` gives the
    spec back without custom_objects. (`keras.models.clone_model` does not
    copy it: rebuild with `build_model(model_spec(model))` instead.)

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        spec_json: the JSON text of the normalized spec (set by the builder).

    Example:

    >>> inputs = keras.Input((4,), name="x")
    >>> model = MultimodalModel(inputs, keras.layers.Dense(2)(inputs),
    ...                         spec_json='{"name": "toy"}')
    >>> model.spec_json
    '{"name": "toy"}'
    """

    def __init__(self, *args, spec_json=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec_json = spec_json

    @property
    def spec(self):
        """The normalized spec as a dict (None when unknown)."""
        return None if self.spec_json is None else json.loads(self.spec_json)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """The compiled loss; in training, with a teacher attached
        (`keras_mm.compression.Distillation.attach`), mixed with its soft
        targets."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred,
                                    sample_weight=sample_weight,
                                    training=training)
        distillation = self.__dict__.get("_keras_mm_distillation")
        if distillation is None or not training:
            return loss
        return distillation.loss(self, x, y_pred, loss)

    def train_step(self, data):
        """Keras' train step; with a teacher whose inputs differ from the
        model's, the batch (in the teacher's inputs) is split first: the
        model trains on its own inputs, the teacher sees its own."""
        distillation = self.__dict__.get("_keras_mm_distillation")
        if distillation is None or distillation.student_inputs is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_x = distillation.split(x)
        with distillation.teacher_batch(teacher_x):
            return super().train_step(
                keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    def get_config(self):
        config = super().get_config()
        config["spec_json"] = self.spec_json
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        spec_json = config.pop("spec_json", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.spec_json = spec_json
        return model
