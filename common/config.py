"""Typed dataclass settings as command-line flags and config files (YAML or JSON).

A command's settings are one or more *sections*, each a dataclass (``train``: :class:`detect.config.TrainConfig`,
``model``: :class:`detect.model.DetectorConfig`, ...). Every field has exactly one default, in its dataclass;
everything else is generated from the fields:

* a flag per field (``--field-name``; name, type, default and help from the field and the
  ``Attributes:`` section of the dataclass docstring, or ``metadata={"help": ...}``); booleans get
  ``--name`` / ``--no-name``, one entry of ``--help`` (``--name, --no-name``); tuples are comma lists
  (``--bins 2,8,2``); ``none`` means None where the field allows it; a field with
  ``metadata={"none_at": v}`` also reads numbers ``<= v`` as None (``--top-k 0``: no limit); an alias's
  help names the flag it equals with the value it sets (``--no-kl``: ``same as --no-use-kl``);
* ``--config FILE``: a YAML or JSON mapping ``{section: {field: value}}`` that sets any field; flags
  given on the command line override it; an unknown section or key is a one-line :class:`ConfigError`;
* ``--print-config``: the effective settings as YAML (a file ``--config`` accepts).

Order of precedence, lowest first: the dataclass defaults, a preset (e.g. a dataset's conventions,
:mod:`common.datasets`), the config file, the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Section", "field_docs", "settable_fields", "parse_value", "coerce_value",
           "add_section_arguments", "add_config_arguments", "read_config_file", "check_settings", "resolve_settings",
           "build_section", "plain", "dump_settings", "section_values", "effective_settings"]


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class Section:
    """One dataclass of a command's settings.

    Attributes:
        name: its key in config files (``"train"``).
        cls: the dataclass.
        exclude: fields the program sets itself (from the data): no flag, not accepted in files.
        flags: field -> flag name, where it is not ``--field-name`` (e.g. to keep a historical name
            or to tell apart two sections' fields of the same name).
        aliases: extra flag -> (field, value it sets), e.g. ``{"--no-kl": ("use_kl", False)}``.
        choices: field -> allowed values (shown in ``--help``, checked by argparse).
        suppress: fields without a flag (still settable by file).
    """

    name: str
    cls: type
    exclude: tuple[str, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    choices: Mapping[str, tuple] = field(default_factory=dict)
    suppress: tuple[str, ...] = ()

    def dest(self, name: str) -> str:
        return f"{self.name}.{name}"


_ATTR = re.compile(r"^(\s*)([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its description in the ``Attributes:`` section of ``cls``'s docstring
    (``name: text`` or ``a, b: text``, continued on more deeply indented lines)."""
    doc = (cls.__doc__ or "").expandtabs()
    lines = doc.splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    base = None
    current: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        m = _ATTR.match(line)
        if base is None and m:
            base = indent
        if base is None or indent < base:
            break
        if indent == base and m:
            current = [n.strip() for n in m.group(2).split(",")]
            for n in current:
                out[n] = m.group(3).strip()
        elif current:
            for n in current:
                out[n] = f"{out[n]} {line.strip()}"
    return out


def settable_fields(section: Section) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(section.cls) if f.init and f.name not in section.exclude]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(tp) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _type_name(tp) -> str:
    inner, opt = _optional(tp)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        name = f"comma list of {args[0].__name__}" if args else "comma list"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or none" if opt else name


def _metavar(tp) -> str:
    inner, _ = _optional(tp)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{args[0].__name__.upper()}[,...]"
        return ",".join(a.__name__.upper() for a in args) or "LIST"
    return getattr(inner, "__name__", "VALUE").upper()


def _scalar(text: str, tp, where: str):
    if tp is bool:
        low = text.strip().casefold()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    try:
        return tp(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {text!r}") from None


def parse_value(text: str, tp, where: str = "value", none_at=None):
    """A command-line string as a value of type ``tp`` (int, float, str, bool, tuples as comma lists,
    ``X | None`` with ``none``)."""
    inner, opt = _optional(tp)
    if opt and text.strip().casefold() in ("none", "null"):
        return None
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        items = [s.strip() for s in text.split(",") if s.strip()]
        value = tuple(_scalar(s, args[0] if args else str, where) for s in items)
    else:
        value = _scalar(text, inner, where)
    return _none_at(value, none_at, opt)


def _none_at(value, none_at, opt: bool):
    if none_at is not None and opt and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value <= none_at:
        return None
    return value


def coerce_value(value, tp, where: str, none_at=None):
    """A value read from a config file as type ``tp``: lists become tuples, ints are accepted for
    floats; anything else of the wrong type is a :class:`ConfigError`."""
    inner, opt = _optional(tp)
    if value is None:
        if opt:
            return None
        raise ConfigError(f"{where}: must not be null")
    if typing.get_origin(inner) is tuple:
        if isinstance(value, str):
            return parse_value(value, tp, where, none_at)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(inner)
        elem = args[0] if args else object
        return tuple(coerce_value(v, elem, where) for v in value)
    if inner is object or inner is Any:
        return value
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return _none_at(float(value), none_at, opt)
    if inner in (int, float, str, bool):
        if not isinstance(value, inner) or (inner is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {inner.__name__}, got {value!r}")
        return _none_at(value, none_at, opt)
    if dataclasses.is_dataclass(inner) and isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{where}: cannot read a value of type {_type_name(tp)} from {value!r}")


def plain(value):
    """JSON/YAML-safe copy: dataclasses and tuples become dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class _Set(argparse.Action):
    """Store a typed value under ``section.field`` only when the flag is given (no argparse default)."""

    def __init__(self, option_strings, dest, tp=None, none_at=None, **kw):
        self.tp, self.none_at = tp, none_at
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            value = parse_value(values, self.tp, option_string, self.none_at)
        except ConfigError as exc:
            parser.error(str(exc))
        if self.choices is not None and value not in self.choices:
            parser.error(f"{option_string}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        setattr(namespace, self.dest, value)


class _Const(argparse.Action):
    def __init__(self, option_strings, dest, const=None, **kw):
        super().__init__(option_strings, dest, nargs=0, const=const, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const)


class _Bool(argparse.Action):
    """A boolean field's ``--name`` (True) and ``--no-name`` (False) as one action, so ``--help`` lists
    them together (``--name, --no-name``) and the usage line as ``[--name | --no-name]``."""

    def __init__(self, option_strings, dest, negative=None, **kw):
        self.negative = negative
        super().__init__([*option_strings, negative], dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string != self.negative)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _flag(section: Section, name: str) -> str:
    return section.flags.get(name, "--" + name.replace("_", "-"))


def _negative(flag: str) -> str:
    """The flag that sets a boolean field to False: ``--name`` -> ``--no-name``."""
    return "--no-" + flag[2:]


def _value_text(value) -> str:
    """A value as it is written on the command line (tuples as comma lists, None as ``none``)."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _alias_help(section: Section, name: str, value) -> str:
    """``same as --flag VALUE`` for an alias: for a boolean value the flag that sets it (``--name`` or
    ``--no-name``)."""
    flag = _flag(section, name)
    if isinstance(value, bool):
        return f"same as {flag if value else _negative(flag)}"
    return f"same as {flag} {_value_text(value)}".replace("%", "%%")


def add_section_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, section: Section,
                          defaults: Mapping[str, Any] | None = None) -> None:
    """One flag per settable field of ``section`` (see the module docstring). A flag not given leaves
    nothing in the namespace, so files and presets can set the field; ``defaults`` (field -> text)
    replaces the dataclass default shown in the help (e.g. "the checkpoint's")."""
    docs = field_docs(section.cls)
    hints = _hints(section.cls)
    for f in settable_fields(section):
        if f.name in section.suppress:
            continue
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        shown = (defaults or {}).get(f.name, "none" if default is None else
                                     ",".join(map(str, default)) if isinstance(default, tuple) else default)
        text = f.metadata.get("help", docs.get(f.name, ""))
        help_text = f"{text.rstrip('.')} (default: {shown})".replace("%", "%%").strip()
        flag = _flag(section, f.name)
        dest = section.dest(f.name)
        choices = section.choices.get(f.name, f.metadata.get("choices"))
        if _optional(tp)[0] is bool:
            parser.add_argument(flag, dest=dest, action=_Bool, negative=_negative(flag), default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=dest, action=_Set, tp=tp, none_at=f.metadata.get("none_at"),
                                choices=tuple(choices) if choices is not None else None, default=argparse.SUPPRESS,
                                metavar=_metavar(tp) if choices is None else "{" + ",".join(map(str, choices)) + "}",
                                help=help_text)
    for alias, (name, value) in section.aliases.items():
        parser.add_argument(alias, dest=section.dest(name), action=_Const, const=value, default=argparse.SUPPRESS,
                            help=_alias_help(section, name, value))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--print-config``."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML or JSON file {section: {field: value}} setting any field; flags override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings as YAML (a --config file) and exit")


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in a YAML or JSON file (``.json``: JSON; anything else: YAML, which reads JSON too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:   # json.JSONDecodeError, yaml.YAMLError: one line
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                          f"{detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping {{section: {{field: value}}}}, "
                          f"got {type(data).__name__}")
    return data


def check_settings(data: Mapping, sections: Iterable[Section], where: str = "config") -> dict[str, dict]:
    """Typed ``{section: {field: value}}`` from a file's mapping; unknown sections and keys, and
    values of the wrong type, are a one-line :class:`ConfigError`."""
    sections = {s.name: s for s in sections}
    out: dict[str, dict] = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"{where}: unknown section {name!r} (known: {', '.join(sections)})")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section {name!r} must be a mapping of field: value")
        sec = sections[name]
        known = {f.name: f for f in settable_fields(sec)}
        hints = _hints(sec.cls)
        for key, value in values.items():
            if key not in known:
                close = [k for k in known if k.startswith(str(key)[:3])]
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"{where}: unknown key {name}.{key}{hint} (known: {', '.join(known)})")
            value = coerce_value(value, hints[key], f"{where}: {name}.{key}", known[key].metadata.get("none_at"))
            choices = sec.choices.get(key, known[key].metadata.get("choices"))
            if choices is not None and value not in choices:
                raise ConfigError(f"{where}: {name}.{key} must be one of {', '.join(map(str, choices))}, "
                                  f"got {value!r}")
            out.setdefault(name, {})[key] = value
    return out


def section_values(args: argparse.Namespace, section: Section) -> dict:
    """The flags of ``section`` given on the command line (field -> value)."""
    prefix = section.name + "."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


def resolve_settings(sections: Iterable[Section], args: argparse.Namespace | None = None,
                     config: str | os.PathLike | Mapping | None = None,
                     presets: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """``{section: {field: value}}`` of everything set above the dataclass defaults: ``presets``
    (field -> value, applied to every section that has that field), then the config file (a path or
    a mapping), then the flags in ``args``."""
    sections = list(sections)
    out: dict[str, dict] = {s.name: {} for s in sections}
    for s in sections:
        names = {f.name for f in settable_fields(s)}
        out[s.name].update({k: v for k, v in (presets or {}).items() if k in names})
    if config is not None:
        where = "config" if isinstance(config, Mapping) else str(config)
        data = config if isinstance(config, Mapping) else read_config_file(config)
        for name, values in check_settings(data, sections, where).items():
            out[name].update(values)
    if args is not None:
        for s in sections:
            out[s.name].update(section_values(args, s))
    return out


def build_section(section: Section, values: Mapping[str, Any], **fixed) -> Any:
    """The dataclass of ``section`` from its settings (``fixed``: the excluded fields the program sets).
    An invalid combination raises the dataclass's ValueError."""
    return section.cls(**dict(values), **fixed)


def dump_settings(settings: Mapping) -> str:
    """YAML text of ``{section: {field: value}}`` (readable again by ``--config``)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    return yaml.dump(plain(settings), Dumper=Dumper, sort_keys=False, default_flow_style=False)


def effective_settings(pairs: Iterable[tuple[Section, Any]]) -> dict[str, dict]:
    """``{section: {field: value}}`` of built dataclasses (every settable field, JSON-safe): what
    checkpoints store and ``--print-config`` prints."""
    return {s.name: {f.name: plain(getattr(obj, f.name)) for f in settable_fields(s)} for s, obj in pairs}
