import dataclasses
import typing


@dataclasses.dataclass
class TrainResult:
    """What `keras_mm.training.train` returns.

    Attributes:
        run_dir: the run folder (`runs/<name>`).
        metrics: `{split: {"loss": float, "num_examples": int, "heads":
            {head: {metric: float}}}}` (also in `metrics.json`).
        history: `{column: [value per epoch]}` of the whole run, resumed
            epochs included (`history.csv`).
        export_path: the published `saved_models/<name>/<version>` folder,
            or None when not exported.
        verify_report: the verifier's report of that export, or None.
        compressed_exports: `{"<format>-<mode>": parity report}` of the
            compressed artefacts `export.quantize` / `export.litert` asked
            for (each report's `path` is the published artefact).
        scoreboard: rows `{"model", "split", "loss", "<head>_<metric>"...}`:
            the fused model per split, then each single-modality model
            where `evaluation.compare_unimodal` asks for them.
        best_checkpoint: the `.keras` file evaluated and exported
            (`best.keras`, or `final.keras` without checkpointing).
        resumed_from_epoch: the epoch a killed run was resumed at (0 for a
            fresh run).
        epochs_run: number of epochs run in all, resumed ones included
            (less than `training.epochs` when early stopping stopped).
        is_chief: False on the non-chief workers of a multi-worker run
            (they train but write, evaluate and export nothing).
        model: the trained model in memory (distributed variables under a
            multi-device strategy).
        unimodal: `{input name: metrics}` of the single-modality runs.
        untrained: why the run looks untrained (non-finite loss, or never
            better than the trivial baseline), or None.
    """

    run_dir: str
    metrics: dict
    history: dict
    export_path: typing.Optional[str] = None
    verify_report: typing.Optional[dict] = None
    compressed_exports: dict = dataclasses.field(default_factory=dict)
    scoreboard: list = dataclasses.field(default_factory=list)
    best_checkpoint: typing.Optional[str] = None
    resumed_from_epoch: int = 0
    epochs_run: int = 0
    is_chief: bool = True
    model: typing.Any = dataclasses.field(default=None, repr=False)
    unimodal: dict = dataclasses.field(default_factory=dict)
    untrained: typing.Optional[str] = None
