"""``--check``: is every run of a study current, and if not, which input changed (nothing is executed).

A run is current when its key (:mod:`.keys`: code, parameters without locations, data content) has a record in
the reports folder's store whose committed outputs (the HTML report) are unchanged: the same reports, data and
code in any folder or on any machine are current. For a stale run the record of its last execution explains
why, input by input: the notebook, each library file it can import, each parameter, each data file (the
manifests of the data a study read are kept in the same store, :func:`save_data_manifests`), the runs a report
summarises, or its output files.

Without the data (``recorded_data=True``, e.g. when README.md's status line is generated), the data
fingerprints of the records are taken as they are: code and parameters are still checked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from patchcore_lib.data import dataset_manifest
from patchcore_lib.study.engine.keys import NOTEBOOK, category_root
from patchcore_lib.study.engine.plan import Run
from patchcore_lib.utils.fingerprint import file_sha256
from patchcore_lib.utils.store import Store, canonical_json

#: the store kind of a data manifest (``{file: [size, sha256]}`` of one category, keyed by its fingerprint)
DATA_MANIFEST = "data_manifest"
_SHOWN = 4  # names listed per reason before "and N more"


@dataclass
class RunCheck:
    """The state of one planned run: current, or stale with the reasons (one line each)."""

    name: str
    current: bool
    reasons: list[str] = field(default_factory=list)
    seconds: float | None = None  # the recorded duration of its last execution

    def line(self) -> str:
        state = "current" if self.current else "STALE  "
        return f"{state}  {self.name}" + ("" if self.current else ": " + "; ".join(self.reasons))


def _few(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _short(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 60 else text[:57] + "..."


def save_data_manifests(store: Store, fingerprints: Mapping[str, str], data_root: str,
                        roots: Mapping[str, str] | None = None) -> None:
    """Keep each category's data manifest in ``store`` (one per category), so that a later ``--check`` can
    name the data files that changed."""
    for category, fingerprint in fingerprints.items():
        if store.lookup(DATA_MANIFEST, fingerprint) is None:
            manifest = dataset_manifest(category_root(category, data_root, roots), category)
            store.save(DATA_MANIFEST, fingerprint, manifest, slot=category)


def _data_of(data: Any, category: str | None) -> dict[str, str]:
    """``{category: fingerprint}`` of a run's recorded data (a category run's fingerprint, or a report's map)."""
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    return {category or "": str(data)} if data is not None else {}


def _data_reasons(old: Any, new: Any, category: str | None, store: Store, data_root: str,
                  roots: Mapping[str, str] | None) -> list[str]:
    reasons = []
    old_map, new_map = _data_of(old, category), _data_of(new, category)
    for category in sorted(set(old_map) | set(new_map)):
        if old_map.get(category) == new_map.get(category):
            continue
        before = store.lookup(DATA_MANIFEST, old_map.get(category, ""))
        if not category or not isinstance(before, dict):
            reasons.append(f"data of {category or 'the category'} changed (no manifest of the data it was made from)")
            continue
        now = dataset_manifest(category_root(category, data_root, roots), category)
        changed = sorted(f for f in now if f in before and list(before[f]) != list(now[f]))
        added, removed = sorted(set(now) - set(before)), sorted(set(before) - set(now))
        parts = [f"{label} {_few(f'{category}/{name}' for name in names)}"
                 for label, names in (("changed", changed), ("new", added), ("removed", removed)) if names]
        reasons.append(f"data files {'; '.join(parts) or 'changed'}")
    return reasons


def explain(run: Run, record: dict[str, Any] | None, store: Store, data_root: str = "",
            roots: Mapping[str, str] | None = None) -> list[str]:
    """Why ``run`` is not current, from the record of its last execution (one reason per changed input)."""
    if record is None:
        return ["never run here (no record in the reports folder's .store/notebook)"]
    old, new = record.get("inputs") or {}, run.inputs
    reasons = []
    if old.get("notebook") not in (None, new["notebook"]):
        reasons.append(f"notebook {run.notebook.name} changed")
    old_modules, modules = old.get("modules"), new["modules"]
    if isinstance(old_modules, dict):
        changed = sorted(f for f in modules if f in old_modules and old_modules[f] != modules[f])
        added, removed = sorted(set(modules) - set(old_modules)), sorted(set(old_modules) - set(modules))
        reasons += [f"code {label}: {_few(names)}" for label, names in
                    (("changed", changed), ("newly imported", added), ("no longer imported", removed)) if names]
    elif old.get("library") != new["library"]:
        reasons.append("library code changed (its record lists no modules)")
    old_params, params = old.get("parameters"), new["parameters"]
    if isinstance(old_params, dict):
        for name in sorted(set(old_params) | set(params)):
            before, now = old_params.get(name, "(unset)"), params.get(name, "(unset)")
            if canonical_json(before) != canonical_json(now):
                reasons.append(f"parameter {name}: {_short(before)} -> {_short(now)}")
    if canonical_json(_data_of(old.get("data"), run.category)) != canonical_json(_data_of(new["data"], run.category)):
        reasons += _data_reasons(old.get("data"), new["data"], run.category, store, data_root, roots)
    old_runs = (old.get("data") or {}).get("runs") if isinstance(old.get("data"), dict) else None
    new_runs = new["data"].get("runs") if isinstance(new["data"], dict) else None
    if old_runs is not None and new_runs is not None and old_runs != new_runs:
        reasons.append("the runs it summarises changed")
    elif isinstance(new["data"], dict) and "outputs" in new["data"] and isinstance(old.get("data"), dict) \
            and old["data"].get("outputs") != new["data"]["outputs"]:
        reasons.append("the runs it summarises were run again, or were missing when it was made")
    if not reasons and record.get("key") == run.key:
        missing = [name for name, digest in (record.get("outputs") or {}).items()
                   if not (store.base / name).is_file() or file_sha256(store.base / name) != digest]
        reasons.append(f"outputs missing or modified: {_few(missing)}" if missing else "outputs not recorded")
    return reasons or ["its key changed (the record was made by another key format)"]


def check_runs(runs: list[Run], store: Store, data_root: str = "",
               roots: Mapping[str, str] | None = None) -> list[RunCheck]:
    """The :class:`RunCheck` of every run (keys assigned, :func:`~.keys.assign_keys`)."""
    out = []
    for run in runs:
        record = store.latest(NOTEBOOK, run.name)
        seconds = record.get("seconds") if isinstance(record, dict) else None
        if store.lookup(NOTEBOOK, run.key, require=[run.html]) is not None:
            out.append(RunCheck(run.name, True, [], seconds))
        else:
            out.append(RunCheck(run.name, False, explain(run, record, store, data_root, roots), seconds))
    return out


def recorded_fingerprints(runs: list[Run], store: Store) -> dict[str, str]:
    """``{category: data fingerprint}`` as the runs' records hold them (for a check without the data)."""
    found: dict[str, str] = {}
    for run in runs:
        record = store.latest(NOTEBOOK, run.name)
        if run.category is not None and isinstance(record, dict):
            data = (record.get("inputs") or {}).get("data")
            if isinstance(data, str):
                found.setdefault(run.category, data)
    return found


def summary_line(checks: list[RunCheck]) -> str:
    stale = [c.name for c in checks if not c.current]
    return (f"{len(checks)} runs: {len(checks) - len(stale)} current, {len(stale)} stale"
            + (f" ({_few(stale)})" if stale else ""))
