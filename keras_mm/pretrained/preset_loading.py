"""Loading keras-hub presets with one-line errors (offline by design).

`from_preset(factory, preset, what, owner, **kwargs)` calls a keras-hub
`from_preset` (`keras_hub.models.Backbone.from_preset`, a tokenizer's, an
image converter's...) and turns its failures into one `ValueError` that
names the preset and says what to do:

- a preset name, `kaggle://` or `hf://` handle that needs the network when
  there is none: download it on a machine that has one and point `preset`
  at the local copy;
- a local folder that is not a preset (no `config.json`);
- a preset without the part asked for (a backbone-only preset has no
  tokenizer).

Nothing is downloaded at import: keras-hub is imported on first use.
"""

import os

# Substrings of the errors keras-hub / requests / huggingface_hub raise when
# a download cannot reach its host.
_NETWORK_SIGNS = ("ConnectionError", "NameResolutionError",
                  "Max retries exceeded", "Failed to resolve",
                  "Name or service not known", "Temporary failure in name",
                  "Network is unreachable", "timed out", "LocalEntryNotFound",
                  "offline mode", "OfflineModeIsEnabled")


def keras_hub():
    """The `keras_hub` module (imported on first use)."""
    import keras_hub as module
    return module


def is_local(preset):
    """True when `preset` is a local folder path (no scheme)."""
    return isinstance(preset, str) and "://" not in preset and (
        os.path.isdir(preset) or os.sep in preset or preset.startswith("."))


def _offline_help(preset):
    return ("download it where there is a network, e.g. `keras_hub.models."
            f"Backbone.from_preset({preset!r})` (or the task class) and "
            "`.save_to_preset('/models/<name>')`, or `kagglehub."
            "model_download(...)` / `huggingface-cli download`, then set "
            "preset: /models/<name> (a local preset folder works offline)")


def check_preset(preset, owner):
    """Refuses a preset value that cannot be one, before keras-hub runs."""
    if not isinstance(preset, str) or not preset.strip():
        raise ValueError(f"{owner}: preset={preset!r} must be a keras-hub "
                         "preset name, a kaggle:// or hf:// handle, or a "
                         "local preset folder")
    if is_local(preset):
        if not os.path.isdir(preset):
            raise ValueError(f"{owner}: preset {preset!r}: no such folder "
                             "(a local preset is a folder written by "
                             "keras-hub's save_to_preset)")
        if not os.path.exists(os.path.join(preset, "config.json")):
            raise ValueError(f"{owner}: preset {preset!r} holds no "
                             "config.json: not a keras-hub preset folder "
                             "(write one with save_to_preset)")
    return preset


def from_preset(factory, preset, what, owner, **kwargs):
    """`factory(preset, **kwargs)` with the errors above.

    Args:
        factory: a keras-hub `from_preset` callable.
        preset: the preset name, handle or folder.
        what: what is loaded, for messages ("backbone", "tokenizer"...).
        owner: who asks, for messages (`"TextPresetTower"`).
        **kwargs: passed to `factory`.
    """
    check_preset(preset, owner)
    try:
        return factory(preset, **kwargs)
    except Exception as error:  # keras-hub raises many kinds
        text = f"{type(error).__name__}: {error}"
        if not is_local(preset) and any(s in text for s in _NETWORK_SIGNS):
            raise ValueError(
                f"{owner}: preset {preset!r} needs a download and there is "
                f"no network here; {_offline_help(preset)}") from None
        if "Unknown preset identifier" in text:
            raise ValueError(
                f"{owner}: preset {preset!r} is not a keras-hub preset name, "
                "a kaggle:// or hf:// handle, or an existing preset folder") \
                from None
        first = str(error).strip().splitlines()[0] if str(error).strip() \
            else type(error).__name__
        raise ValueError(f"{owner}: cannot load the {what} of preset "
                         f"{preset!r}: {first}") from error


__all__ = ["check_preset", "from_preset", "is_local", "keras_hub"]
