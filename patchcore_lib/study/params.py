"""The one check of notebook parameters.

Every notebook calls :func:`validate_parameters` right after papermill's injected cell; a bad value raises
one :class:`~patchcore_lib.errors.ConfigError` naming the parameter. A parameter is checked against the one
declaration of its name:

* a field of :class:`~patchcore_lib.detectors.PatchCoreConfig` (``backbone``, ``imagesize``, ``sampler``, ...),
  else of :class:`~patchcore_lib.detectors.GaussianADConfig` (``method``, ``d``, ``k``, ...): the detector's
  own schema (:func:`patchcore_lib.utils.schema.check_value`);
* else a field of :class:`~patchcore_lib.evaluation.options.EvaluationOptions` (``mask_convention``,
  ``train_shots``, ``shots_seed``);
* else a field of :class:`StudyParameters` below: the parameters only the study notebooks have (data
  location, output folders, the lists of values an ablation sweeps);
* any other name is refused.

The checks that involve several parameters (the image geometry of the detectors, layers of the backbone, the
dataset location with the embedded synthetic default) are in :func:`check_combination`.

A notebook declares its parameters once, as the assignments of its ``parameters`` cell, and passes them on
with ``validate_parameters(declared_parameters(globals()))``: every global whose name a schema declares.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping

from patchcore_lib.components.backbones import BACKBONES, check_layers, get_spec
from patchcore_lib.components.knn import DISTANCES
from patchcore_lib.components.sampling import SAMPLERS
from patchcore_lib.data import AUTO, LAYOUTS, resolve_data_root, resolve_layout
from patchcore_lib.detectors import DETECTORS, GaussianADConfig, PatchCoreConfig, ThresholdOptions
from patchcore_lib.detectors.base import check_geometry
from patchcore_lib.detectors.ensemble import FUSIONS
from patchcore_lib.detectors.patchcore import KNN_SEARCHES
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.options import EvaluationOptions
from patchcore_lib.utils.schema import check_value, default_of, option, schema_fields


@dataclass
class StudyParameters:
    """The notebook parameters that are not detector settings, declared once (defaults as in the notebooks)."""

    data_root: str = option("", "dataset root (a registered layout); empty: $PATCHCORE_DATA_ROOT, the per-user "
                                "data folder, the MVTec AD download (see patchcore_lib.data.roots)")
    layout: str = option(AUTO, "dataset layout of data_root; auto: detected when unambiguous",
                         choices=lambda: (AUTO, *LAYOUTS.names()))
    category: str = option("", "category under data_root; empty: the embedded synthetic default category")
    categories: tuple[str, ...] = option((), "categories of the report (empty: every category found)")
    reports_dir: str | None = option(None, "output folder; None: reports/ of the checkout")
    run_id: str | None = option(None, "run folder name; None: <category>-<hash of the parameters>")
    cache_dir: str | None = option(None, "store of features and ablation rows; None: $PATCHCORE_CACHE/store")
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds of the repeated runs (02-04, 06-08): every number is the mean over "
                                    "them with its sample standard deviation; the seed changes the coreset selection "
                                    "(06: also PaDiM's channel subset and OrthoAD's projection), never the "
                                    "features (extracted once)", minimum=0)
    # 01 feature extraction
    ratios: tuple[float, ...] = option((0.01, 0.1, 0.25, 1.0), "coreset ratios", exclusive_minimum=0, maximum=1)
    bank_imagesizes: tuple[int, ...] = option((224, 256, 320), "image sizes of the memory-bank table", minimum=1)
    num_samples: int = option(4, "training images shown / averaged for the receptive field", minimum=1)
    pca_points: int = option(3000, "at most this many patches per group in the PCA plot", minimum=10)
    # 02 coreset ablation
    samplers: tuple[str, ...] = option(("random", "approx_greedy", "greedy"), "samplers compared",
                                       choices=SAMPLERS.names)
    max_exact_greedy: int = option(20000, "skip exact greedy above this many training patch features", minimum=0)
    spread_seeds: tuple[int, ...] = option((0, 1, 2), "seeds of the seed-spread check ([] skips it)", minimum=0)
    spread_ratio: float = option(0.1, "coreset ratio of the seed-spread check", exclusive_minimum=0, maximum=1)
    # 03 kNN scoring
    k_values: tuple[int, ...] = option((1, 3, 5, 9), "numbers of nearest neighbours k", minimum=1)
    b_values: tuple[int, ...] = option((1, 3, 9), "re-weighting neighbourhoods b (Eq. 7)", minimum=1)
    distances: tuple[str, ...] = option(("sqeuclidean", "euclidean"), "distances", choices=DISTANCES)
    sigmas: tuple[float, ...] = option((0.0, 2.0, 4.0, 8.0), "Gaussian blur sigmas (px)", minimum=0)
    gallery_size: int = option(8, "images in the anomaly-map gallery", minimum=1)
    # 04 evaluate
    ensemble_backbones: tuple[str, ...] = option((), "two or more backbones: one PatchCore each, averaged",
                                                 choices=BACKBONES.names)
    ensemble_fusion: str = option("official", "fusion of the ensemble members: official (min-max over the test "
                                  "set, as the official code) or standardised", choices=FUSIONS)
    # 06 baselines
    methods: tuple[str, ...] = option(("patchcore", "padim", "orthoad"), "detectors compared",
                                      choices=DETECTORS.names)
    orthoad_k: tuple[int, ...] = option((100, 300), "OrthoAD ranks k (one run each)", minimum=1)
    padim_d: int = option(100, "PaDiM: number of randomly kept channels", minimum=1)
    # 07 paper experiments
    backbones: tuple[str, ...] = option(("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
                                        "backbones of the backbone x image size table", choices=BACKBONES.names)
    imagesizes: tuple[int, ...] = option((224, 320), "image sizes of the backbone x image size table", minimum=1)
    shots: tuple[int, ...] = option((1, 5, 16, 50), "few-shot training image counts (the paper's Table S5)",
                                    minimum=1)
    shot_seeds: tuple[int, ...] = option((0, 1, 2), "seeds of the few-shot draws", minimum=0)
    few_shot_ratio: float = option(0.25, "coreset ratio of the few-shot banks (PatchCore-25)",
                                   exclusive_minimum=0, maximum=1)
    search_ratios: tuple[float, ...] = option((1.0, 0.1, 0.01), "coreset ratios of the search table (1.0: the "
                                              "whole bank, no selection)", exclusive_minimum=0, maximum=1)
    searches: tuple[str, ...] = option(KNN_SEARCHES, "nearest-neighbour searches compared", choices=KNN_SEARCHES)
    max_patch_factor: float | None = option(2.0, "notebook 08: skip an ablation variant with more than this many "
                                            "times the default variant's training patches (None: run every "
                                            "variant)", exclusive_minimum=0)
    max_search_bank: int | None = option(20_000, "notebook 08: skip searching a memory bank larger than this "
                                         "(None: search every bank, the 100% one included)", minimum=1)


#: list parameters that must hold at least one value
NON_EMPTY = ("seeds", "ratios", "bank_imagesizes", "samplers", "k_values", "b_values", "distances", "sigmas",
             "methods", "backbones", "imagesizes", "shots", "shot_seeds", "search_ratios", "searches")

#: where each parameter name is declared, in order of precedence
SCHEMAS: tuple[type, ...] = (PatchCoreConfig, GaussianADConfig, ThresholdOptions, EvaluationOptions, StudyParameters)


def parameter_names() -> set[str]:
    """Every name a notebook parameter may have: the fields of :data:`SCHEMAS`."""
    return set().union(*(schema_fields(cls) for cls in SCHEMAS))


def schema_for(name: str) -> type:
    """The config class that declares parameter ``name``; ConfigError naming it when none does."""
    for cls in SCHEMAS:
        if name in schema_fields(cls):
            return cls
    raise ConfigError(f"unknown notebook parameter {name!r}; known parameters: {', '.join(sorted(parameter_names()))}")


def parameter_default(name: str) -> Any:
    """The default of parameter ``name``, from its one declaration (:func:`schema_for`)."""
    return default_of(schema_fields(schema_for(name))[name])


def declared_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook parameters in ``namespace`` (a notebook's ``globals()`` right after its ``parameters`` cell
    and papermill's injected one): every variable whose name a schema declares, in the order of the namespace.

    The ``parameters`` cell is the one place a notebook declares its parameters; no other global of the cells
    before the check may have a parameter's name (``tests/test_study_params.py`` checks every notebook)."""
    names = parameter_names()
    return {name: value for name, value in namespace.items() if name in names}


def with_config_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """A PatchCore config dict as recorded (``metrics.json``), with the schema's default for every field it lacks
    (records older than an option): what the published-number look-ups of :mod:`patchcore_lib.paper` read."""
    return {**{name: default_of(field) for name, field in schema_fields(PatchCoreConfig).items()}, **config}


def check_parameter(name: str, value: Any) -> Any:
    """Check one parameter against its declaration; returns the normalised value (lists as tuples)."""
    checked = check_value(schema_for(name), name, value, what=f"notebook parameter '{name}'")
    if name in NON_EMPTY and not checked:
        raise ConfigError(f"notebook parameter '{name}' must be a non-empty list, got {value!r}")
    return checked


def check_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter on its own (no dataset access); returns ``params`` unchanged."""
    for name, value in params.items():
        check_parameter(name, value)
    return params


def check_combination(params: dict[str, Any], synthetic_kind: str = "texture") -> dict[str, Any]:
    """The checks across parameters; returns a new dict with ``layers`` in network order and the dataset resolved.

    The dataset is resolved by :func:`patchcore_lib.data.resolve_data_root`: an empty ``data_root`` is looked
    up in ``$PATCHCORE_DATA_ROOT`` and the per-user data folder (MVTec AD categories downloaded when missing);
    the synthetic set only for an empty or synthetic ``category``; a given ``data_root`` must hold ``category``.
    """
    out = dict(params)
    if "backbone" in out and out.get("layers"):
        out["layers"] = list(check_layers(get_spec(out["backbone"]), out["layers"]))
    if "resize" in out and "imagesize" in out:
        spec = get_spec(out.get("backbone", parameter_default("backbone")))
        geometry = SimpleNamespace(resize=out["resize"], imagesize=out["imagesize"], backbone=spec.name,
                                   layers=check_layers(spec, out.get("layers") or spec.default_layers))
        try:
            check_geometry(geometry)  # the detectors' own rule (crop within the resized image, minimum size)
        except ConfigError as exc:
            raise ConfigError(f"notebook parameters: {exc}") from None
    if len(set(out.get("seeds") or ())) != len(out.get("seeds") or ()):
        raise ConfigError(f"notebook parameter 'seeds' repeats a seed: {list(out['seeds'])}")
    if len(out.get("ensemble_backbones") or ()) == 1:
        raise ConfigError("notebook parameter 'ensemble_backbones' needs at least two backbones (or [] for none)")
    if "data_root" in out:
        if not out["data_root"]:
            root, category = resolve_data_root("", out.get("category"), synthetic_kind=synthetic_kind)
            out["data_root"], out["category"] = str(root), category
        elif "category" in out:
            layout = resolve_layout(out["data_root"], out["category"], out.get("layout", parameter_default("layout")))
            check = getattr(LAYOUTS.get(layout), "check", None)
            if check is not None:
                check(out["data_root"], out["category"])
    return out


def validate_parameters(params: dict[str, Any], synthetic_kind: str = "texture") -> dict[str, Any]:
    """Check every notebook parameter and their combination; resolve an empty ``data_root``.

    Returns a new dict: the values as given (so run ids and ``metrics.json`` keep them), ``layers`` in
    network order, ``data_root``/``category`` resolved (see :func:`check_combination`).
    """
    return check_combination(check_parameters(params), synthetic_kind)


def config_from_params(params: dict[str, Any], **overrides: Any) -> PatchCoreConfig:
    """A validated :class:`PatchCoreConfig` from notebook parameters (+ overrides); ConfigError if invalid.

    The parameters that are no PatchCore setting are ignored (they are checked by :func:`check_parameters`).
    """
    check_parameters(params)
    fields = {f.name for f in dataclasses.fields(PatchCoreConfig)}
    values = {k: v for k, v in params.items() if k in fields}
    if values.get("layers") is not None:
        values["layers"] = tuple(values["layers"])
    values.update(overrides)
    return PatchCoreConfig(**values)
