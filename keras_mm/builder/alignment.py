"""The dual-encoder rules of a spec: `fusion: none` with contrastive heads.

A contrastive head (`keras_mm.heads.ContrastiveHead`, `takes_modalities`)
takes the towers' own outputs, so a spec with one has no fusion layer and
no trunk, and its other heads cannot be classifiers (they need a fused
vector). `check_alignment` enforces that and fills the head's
`modalities` (default: every input) on the normalized spec.
"""

from keras_mm.errors import ConfigError, not_one_of


def aligns_towers(head_spec):
    """True for a head over the tower outputs (no fusion layer): the
    contrastive head."""
    from keras_mm.registry import HEADS
    return getattr(HEADS.get(head_spec["type"]), "takes_modalities", False)


def check_alignment(spec):
    """`fusion: none` takes contrastive heads only, and a contrastive head
    needs `fusion: none`; its `modalities` (default: every input) are
    inputs."""
    aligned = [n for n, h in spec["heads"].items() if aligns_towers(h)]
    if not aligned:
        return
    if spec["fusion"] is not None:
        raise ConfigError(
            f"heads.{aligned[0]}",
            "a contrastive head aligns the towers' own outputs; set "
            f"fusion: none (fusion {spec['fusion']['type']!r} is set)")
    others = [n for n in spec["heads"] if n not in aligned]
    if others:
        raise ConfigError(
            f"heads.{others[0]}",
            f"a {spec['heads'][others[0]]['type']} head needs a fusion layer, "
            "but fusion is none (a dual encoder); train it in a recipe of its "
            "own that starts its towers from this run (tower.init_from)")
    if spec["trunk"] is not None and spec["trunk"]["hidden_units"]:
        raise ConfigError("trunk", "a trunk follows a fusion layer; with "
                          "fusion: none remove the trunk (the contrastive "
                          "head projects each tower itself)")
    for name in aligned:
        head = spec["heads"][name]
        modalities = head.setdefault("modalities", list(spec["inputs"]))
        if not isinstance(modalities, list):
            raise ConfigError(f"heads.{name}.modalities",
                              f"{modalities!r} is not a list of input names")
        for i, modality in enumerate(modalities):
            if modality not in spec["inputs"]:
                raise not_one_of(f"heads.{name}.modalities[{i}]", modality,
                                 list(spec["inputs"]))
