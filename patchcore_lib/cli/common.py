"""What every sub-command shares: model options generated from the schema, the detector they describe,
``--config FILE.yaml`` (the help formatting, light to import, is :mod:`.help`)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

from patchcore_lib.cli.exit_codes import exit_codes_text
from patchcore_lib.cli.help import PROG, DefaultsFormatter, mark_required
import patchcore_lib.detectors as detectors  # its names load when used (PEP 562): predict --model x.onnx needs no torch
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.schema import add_options, flag, options_from_args

#: keys of a preset file that are not options (its name, the study's per-notebook parameters)
PRESET_ONLY_KEYS = ("name", "notebook_parameters")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--quiet``, ``--verbose`` and ``--debug``, which every sub-command takes."""
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="options from a YAML file (the keys of a preset's 'parameters', e.g. params/quick.yaml); "
                             "options given on the command line override it")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true",
                          help="no progress bars and no progress messages on stderr (warnings and errors only)")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="also debug messages on stderr (device, backbone weights, memory bank, timings)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _method_dest(cls: Any, name: str) -> str:
    return f"{cls.option_prefix}_{name}"


def add_model_options(parser: argparse.ArgumentParser) -> list[str]:
    """``--method`` plus every PatchCore option and every detector's own options (``--<prefix>-<name>``)."""
    parser.add_argument("--method", default="patchcore", choices=detectors.DETECTORS.names(), help="detector")
    names = add_options(parser.add_argument_group("PatchCore options (ensemble members share them)"),
                        detectors.PatchCoreConfig)
    for method, cls in detectors.DETECTORS.items():
        if cls.method_options:
            add_options(parser.add_argument_group(f"{method} options"), cls.options_class,
                        include=cls.method_options, prefix=cls.option_prefix)
    return names


def detector_from_args(args: argparse.Namespace, patchcore_names: Sequence[str]) -> detectors.Detector:
    """The detector the options describe; options that do not apply to ``--method`` are an error."""
    given = options_from_args(args, patchcore_names)
    cls = detectors.DETECTORS.get(args.method)
    method_options: dict[str, Any] = {}
    for method, other in detectors.DETECTORS.items():
        for name in other.method_options:
            value = getattr(args, _method_dest(other, name), None)
            if value is None:
                continue
            if other is not cls:
                raise ConfigError(f"option {flag(_method_dest(other, name))} applies to --method {method}, "
                                  f"not {args.method}")
            method_options[name] = value
    if args.method == "patchcore" or args.method == "patchcore_ensemble":
        base = detectors.PatchCoreConfig(**given)
    else:
        unused = sorted(set(given) - set(detectors.SHARED_SETTINGS) - {"layers"})
        if unused:
            raise ConfigError(f"option(s) {', '.join(flag(n) for n in unused)} do not apply to --method {args.method}")
        if "layers" in given:
            method_options.setdefault("layers", given.pop("layers"))
        base = detectors.PatchCoreConfig(**{k: v for k, v in given.items() if k != "layers"})
    return detectors.make_detector(args.method, base, **method_options)


def _option_dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.option_strings}


def config_file_defaults(path: str | Path, parser: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """The option values of a YAML file for ``parser`` (dest -> value).

    The file is a mapping of option names (``coreset_ratio: 0.1`` or ``coreset-ratio: 0.1``), or a preset
    (``params/*.yaml``) whose ``parameters`` are used, with its ``data_root``/``categories`` when not empty.
    Model settings are ignored by the sub-commands that read them from the model file (predict, export);
    any other unknown key is an error naming the file and the key.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    values: dict[str, Any] = {}
    if isinstance(data.get("parameters"), dict):
        values.update(data["parameters"])
        if data.get("data_root"):
            values["data_root"] = data["data_root"]
        if data.get("categories"):
            values["category"] = list(data["categories"])
    else:
        values.update({k: v for k, v in data.items() if k not in PRESET_ONLY_KEYS})
    dests = _option_dests(parser)
    model_fields = {f.name for f in dataclasses.fields(detectors.PatchCoreConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest in ("config", "debug"):
            continue
        if dest not in dests:
            if dest in model_fields or dest == "ensemble_backbones":
                continue  # a model setting: this sub-command reads it from the model file
            valid = ", ".join(sorted(d for d in dests if d not in ("help", "config", "debug")))
            raise ConfigError(f"--config {path}: unknown key {key!r} for patchcore {command}; valid: {valid}")
        if value is None or value == "" or value == []:
            continue
        out[dest] = value
    if "ensemble_backbones" in out and "method" in dests and "method" not in out:
        out["method"] = "patchcore_ensemble"
    return out


def require(args: argparse.Namespace, *dests: str) -> None:
    """ConfigError for the first option in ``dests`` that neither the command line nor --config gave."""
    for dest in dests:
        if getattr(args, dest, None) in (None, "", []):
            raise ConfigError(f"option {flag(dest)} is required (on the command line or in --config)")
