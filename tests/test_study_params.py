"""The one check of notebook parameters (patchcore_lib.study.params)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from patchcore_lib.components.sampling import SAMPLERS
from patchcore_lib.detectors import DETECTORS, GaussianADConfig, PatchCoreConfig
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.study.params import (NON_EMPTY, StudyParameters, check_parameter, check_parameters,
                                        config_from_params, declared_parameters, parameter_names, schema_for,
                                        validate_parameters)
from patchcore_lib.study.engine import notebook_parameters
from patchcore_lib.utils.schema import choices_of, default_of, schema_fields
import helpers

NOTEBOOKS = sorted(helpers.NOTEBOOKS.glob("*.ipynb"))


def test_each_name_is_checked_by_its_one_declaration():
    assert schema_for("imagesize") is PatchCoreConfig and schema_for("sampler") is PatchCoreConfig
    assert schema_for("epsilon") is GaussianADConfig
    assert schema_for("k_values") is StudyParameters and schema_for("data_root") is StudyParameters
    overlap = set(schema_fields(StudyParameters)) & (set(schema_fields(PatchCoreConfig))
                                                     | set(schema_fields(GaussianADConfig)))
    assert not overlap, f"study parameters that duplicate a detector setting: {overlap}"


def test_unknown_parameter_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown notebook parameter 'imagesiz'"):
        check_parameters({"imagesize": 64, "imagesiz": 64})


@pytest.mark.parametrize("name, value, message", [
    ("imagesize", "64", "must be an integer, got str '64'"),
    ("imagesize", 0, ">= 1"),
    ("coreset_ratio", 1.5, "1.5"),
    ("sampler", "fastest", "unknown sampler 'fastest'"),
    ("samplers", ["random", "fastest"], "unknown sampler 'fastest'"),
    ("samplers", "random", "must be a list"),
    ("ratios", [0.1, 0], "got 0"),
    ("ratios", [1.5], "1.5"),
    ("k_values", [1, 0], ">= 1"),
    ("k_values", [], "must be a non-empty list"),
    ("seeds", [], "must be a non-empty list"),
    ("seeds", [0, -1], ">= 0"),
    ("seeds", 3, "must be a list"),
    ("b_values", [1.5], "must be an integer"),
    ("sigmas", [-1], ">= 0"),
    ("distances", ["manhattan"], "'manhattan'"),
    ("bank_imagesizes", ["224"], "must be an integer"),
    ("max_exact_greedy", -3, ">= 0"),
    ("spread_ratio", 0, "got 0"),
    ("methods", ["padim", "lof"], "'lof'"),
    ("orthoad_k", [0], ">= 1"),
    ("padim_d", True, "must be an integer"),
    ("ensemble_backbones", ["resnet18", "vgg"], "unknown backbone 'vgg'"),
    ("reports_dir", 3, "must be a string"),
    ("device", None, "must not be empty"),
])
def test_bad_values_name_the_parameter(name, value, message):
    with pytest.raises(ConfigError) as info:
        check_parameter(name, value)
    assert f"notebook parameter '{name}'" in str(info.value) and message in str(info.value)


def test_good_values_pass():
    check_parameters({"imagesize": 64, "coreset_ratio": 1, "sigma": 4, "layers": None, "weights": None,
                      "run_id": None, "spread_seeds": [], "ensemble_backbones": [], "categories": [],
                      "samplers": list(SAMPLERS), "methods": list(DETECTORS), "sigmas": [0, 2.5]})
    assert all(name in schema_fields(StudyParameters) for name in NON_EMPTY)


def test_choices_come_from_the_registries():
    fields = schema_fields(StudyParameters)
    assert choices_of(fields["samplers"]) == SAMPLERS.names() and choices_of(fields["methods"]) == DETECTORS.names()


def test_cross_checks(synthetic_root):
    with pytest.raises(ConfigError, match="notebook parameters: imagesize .* must not exceed resize"):
        validate_parameters({"resize": 64, "imagesize": 96})
    with pytest.raises(ConfigError, match="notebook parameters: imagesize 16 is too small"):  # the detectors' rule
        validate_parameters({"resize": 16, "imagesize": 16})
    with pytest.raises(ConfigError, match="unknown layer"):
        validate_parameters({"backbone": "efficientnet_lite0", "layers": ["layer2"]})
    assert validate_parameters({"backbone": "efficientnet_lite0", "layers": ["blocks.4", "blocks.2"]})["layers"] == \
        ["blocks.2", "blocks.4"]
    with pytest.raises(ConfigError, match="at least two backbones"):
        validate_parameters({"ensemble_backbones": ["resnet18"]})
    with pytest.raises(ConfigError, match="'seeds' repeats a seed: \\[0, 1, 0\\]"):
        validate_parameters({"seeds": [0, 1, 0]})
    assert validate_parameters({"seeds": [2, 0]})["seeds"] == [2, 0]  # order kept: per-seed values follow it
    params = {"data_root": str(synthetic_root), "category": "tiny", "imagesize": 64, "sigma": 4}
    resolved = validate_parameters(params)
    assert resolved == params and resolved is not params  # values as given (run ids and metrics.json keep them)
    with pytest.raises(DatasetError, match="category 'nope' not found"):
        validate_parameters({"data_root": str(synthetic_root), "category": "nope"})


def test_config_from_params():
    config = config_from_params({"resize": 64, "imagesize": 64, "layers": ["blocks.2"], "k_values": [1, 3],
                                 "reports_dir": None}, sampler="random")
    assert config.layers == ("blocks.2",) and config.sampler == "random" and config.imagesize == 64
    with pytest.raises(ConfigError, match="k_values"):
        config_from_params({"k_values": [0]})
    with pytest.raises(ConfigError, match="too small"):
        config_from_params({"resize": 16, "imagesize": 16})


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_parameter_is_declared_with_the_notebooks_default(notebook):
    for name, source in notebook_parameters(notebook).items():
        cls = schema_for(name)  # raises for a parameter without a declaration
        value = ast.literal_eval(source)
        check_parameter(name, value)
        if cls is StudyParameters:
            default = default_of(schema_fields(cls)[name])
            assert (tuple(value) if isinstance(value, list) else value) == default, (name, value, default)


#: the call that passes a notebook's parameters on: the parameters cell is their one declaration
CHECK = "validate_parameters(declared_parameters(globals()))"


def _bound_names(statements: list[ast.stmt]) -> set[str]:
    """The globals ``statements`` bind (imports, assignments, definitions, loop and ``with`` targets)."""
    names: set[str] = set()
    for node in (sub for statement in statements for sub in ast.walk(statement)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _before_the_check(notebook: Path) -> tuple[str, set[str]]:
    """(the source of the ``parameters`` cell, the globals every other cell binds before the notebook's
    :data:`CHECK`)."""
    nbformat = pytest.importorskip("nbformat")
    cells = [c for c in nbformat.read(str(notebook), as_version=4).cells if c.cell_type == "code"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    checks = [i for i, c in enumerate(cells) if CHECK in c.source]
    assert len(tagged) == 1 and len(checks) == 1, f"{notebook.name}: one parameters cell, one {CHECK}"
    before: list[ast.stmt] = []
    for cell in cells[:checks[0] + 1]:
        if cell is tagged[0]:
            continue
        statements = ast.parse(cell.source).body
        if CHECK in cell.source:  # the cell of the check: only what runs before it
            statements = statements[:next(i for i, s in enumerate(statements) if CHECK in ast.unparse(s))]
        before += statements
    return tagged[0].source, _bound_names(before)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_declared_parameters_are_the_parameters_cell(notebook):
    """What ``declared_parameters(globals())`` passes on is exactly what the parameters cell assigns, in its
    order, and no other global the notebook binds before the check has a parameter's name."""
    source, others = _before_the_check(notebook)
    collisions = others & parameter_names()
    assert not collisions, f"{notebook.name}: globals named like parameters before the check: {sorted(collisions)}"
    namespace = {name: object() for name in others}
    exec(compile(source, f"{notebook.name}:parameters", "exec"), namespace)  # literals and comments only
    assert list(declared_parameters(namespace)) == list(notebook_parameters(notebook))


def test_declared_parameters_takes_the_schema_names_only():
    namespace = {"imagesize": 64, "k_values": [1], "mask_convention": "official", "plt": object(), "_": 1,
                 "config": object(), "__name__": "__main__"}
    assert declared_parameters(namespace) == {"imagesize": 64, "k_values": [1], "mask_convention": "official"}
