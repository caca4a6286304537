"""A step's parameters as data: name, type, domain, default and help, declared once.

In the spirit of scikit-learn's ``_parameter_constraints``: each :class:`Param` knows how to check a
value (:meth:`Param.clean`, for job submissions, query strings and JSON bodies alike), how to describe
itself to the panel (:meth:`Param.describe`, served by ``/kinds``) and how to appear on the command
line (:meth:`Param.add_to_parser`). Faces never restate a parameter's name, range or default.
"""
import argparse
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameter, NotFound, Unavailable

REQUIRED = object()            # the default of a parameter that must be given
MAX_LIST_ITEMS = 10            # a list parameter (a grid axis, a set of networks) holds at most this many
NETWORK_ID = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
TYPES = ("int", "float", "bool", "choice", "str", "network", "networks", "path",
         "int_list", "float_list", "choice_list", "object")


@dataclass(frozen=True)
class Param:
    """One parameter of a step.

    ``type`` is one of :data:`TYPES`; ``low``/``high`` bound numbers (and list items), ``choices`` lists
    the allowed strings. ``flag`` overrides the CLI option (``"--dims"``, or a tuple of synonyms; a bool
    whose default is True becomes ``--no-NAME``), ``choice_flags`` also gives each choice its own flag
    (``--supervised``), ``positional`` makes it a positional CLI argument, ``cli=False`` hides it
    from the CLI (the CLI has its own way to give it) and ``web=False`` keeps it off HTTP (e.g. paths
    on the server's disk that only a shell user may name). ``min_items`` applies to lists.
    """

    name: str
    type: str
    default: Any = None
    low: float = None
    high: float = None
    choices: tuple = None
    help: str = ""
    flag: object = None
    choice_flags: bool = False
    short: str = None
    positional: bool = False
    cli: bool = True
    web: bool = True
    min_items: int = 1
    max_len: int = 200
    metavar: str = None

    def __post_init__(self):
        assert self.type in TYPES, self.type
        assert not self.type.startswith("choice") or self.choices, self.name
        assert self.type != "object" or not self.cli, self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    # -- checking --------------------------------------------------------------------------------------
    def clean(self, value):
        """The checked value (converted from a query-string string where needed), or the default."""
        if value is None or value is REQUIRED:
            if self.required:
                raise InvalidParameter(f"parameter {self.name!r} is required")
            return self.default
        if self.type == "object":
            if not isinstance(value, dict):
                raise InvalidParameter(f"parameter {self.name!r} must be an object")
            return value
        if self.type.endswith("_list") or self.type == "networks":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not self.min_items <= len(value) <= MAX_LIST_ITEMS:
                raise InvalidParameter(
                    f"parameter {self.name!r} must be a list of {self.min_items} to {MAX_LIST_ITEMS} values")
            item_type = "network" if self.type == "networks" else self.type[:-5]
            out = [_clean_one(self, item_type, v) for v in value]
            if self.type == "networks" and len(set(out)) != len(out):
                raise InvalidParameter(f"parameter {self.name!r} lists a network twice")
            return out
        return _clean_one(self, self.type, value)

    # -- describing ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"name": self.name, "type": self.type, "default": None if self.required else self.default,
                "required": self.required, "min": self.low, "max": self.high,
                "choices": list(self.choices) if self.choices else None, "help": self.help}

    # -- the command line --------------------------------------------------------------------------------
    def cli_flags(self):
        if self.positional:
            return [self.name]
        if self.flag:
            flags = [self.flag] if isinstance(self.flag, str) else list(self.flag)
        elif self.type == "bool" and self.default is True:
            flags = ["--no-" + self.name.replace("_", "-")]
        else:
            flags = ["--" + self.name.replace("_", "-")]
        return flags + ([self.short] if self.short else [])

    def add_to_parser(self, parser):
        help_ = self.help
        if self.type == "bool":
            if self.default is True:
                parser.add_argument(*self.cli_flags(), dest=self.name, action="store_false",
                                    help="do not " + help_)
            else:
                parser.add_argument(*self.cli_flags(), dest=self.name, action="store_true", help=help_)
            return
        if self.choice_flags:  # --mode X, or --X alone
            parser = parser.add_mutually_exclusive_group()
            for choice in self.choices:
                parser.add_argument("--" + choice, dest=self.name, action="store_const", const=choice,
                                    help=f"{self.name} {choice}")
        kwargs = {"help": _cli_help(self)}
        if not self.positional:
            kwargs["dest"] = self.name
            kwargs["required"] = self.required
            kwargs["default"] = None if self.required else self.default
        if not self.positional:
            kwargs["metavar"] = self.metavar or self.cli_flags()[0].lstrip("-").upper().replace("-", "_")
        if self.type.endswith("_list") or self.type == "networks":
            kwargs["nargs"] = "+"
        if self.choices and not self.type.startswith("int"):
            kwargs["choices"] = self.choices
        # The CLI keeps values as text; clean() converts and checks them as for every face.
        parser.add_argument(*self.cli_flags(), **kwargs)


def _cli_help(p):
    text = p.help
    if p.low is not None or p.high is not None:
        text += f" [{_fmt(p.low)}..{_fmt(p.high)}]"
    if p.default not in (None, REQUIRED) and p.type != "bool":
        text += f" (default {p.default})"
    return text.replace("%", "%%")


def _fmt(v):
    return "" if v is None else (int(v) if float(v).is_integer() and abs(v) < 1e15 else v)


def _clean_one(p, type_, value):
    name = p.name
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        raise InvalidParameter(f"parameter {name!r} must be true or false, got {_show(value)}")
    if type_ == "int":
        if isinstance(value, bool):
            raise InvalidParameter(f"parameter {name!r} must be an integer, got {value!r}")
        if isinstance(value, str):
            if not re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
                raise InvalidParameter(f"parameter {name!r} must be an integer, got {_show(value)}")
            value = int(value)
        elif isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
            value = int(value)
        if not isinstance(value, int):
            raise InvalidParameter(f"parameter {name!r} must be an integer, got {type(value).__name__}")
        value = _in_range(p, value)
        if p.choices and value not in p.choices:
            raise InvalidParameter(f"parameter {name!r} must be one of: {', '.join(map(str, p.choices))}; "
                                   f"got {value}")
        return value
    if type_ == "float":
        if isinstance(value, bool):
            raise InvalidParameter(f"parameter {name!r} must be a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise InvalidParameter(f"parameter {name!r} must be a number, got {_show(value)}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidParameter(f"parameter {name!r} must be a finite number")
        return _in_range(p, float(value))
    if not isinstance(value, str):
        raise InvalidParameter(f"parameter {name!r} must be a string, got {type(value).__name__}")
    limit = 4096 if type_ == "path" else p.max_len
    if len(value) > limit:
        raise InvalidParameter(f"parameter {name!r} is too long ({len(value)} characters, limit {limit})")
    if "\x00" in value or not _encodable(value):
        raise InvalidParameter(f"parameter {name!r} contains a character that is not allowed")
    if type_ == "choice":
        if value not in p.choices:
            raise InvalidParameter(f"parameter {name!r} must be one of: {', '.join(map(str, p.choices))}; "
                                   f"got {_show(value)}")
        return value
    if type_ == "network":
        return check_network(value, name)
    return value


def _encodable(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _in_range(p, value):
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        raise InvalidParameter(f"parameter {p.name!r} must be between {_fmt(p.low)} and {_fmt(p.high)}, "
                               f"got {value}")
    return value


def _show(value):
    text = repr(value)
    return text if len(text) <= 42 else text[:40] + "…"


def check_network(value, name="network", runnable=True):
    """A network id of the registry (and, with ``runnable``, one that can run here)."""
    if not isinstance(value, str) or not NETWORK_ID.fullmatch(value):
        raise InvalidParameter(f"parameter {name!r} must be a network id (letters, digits, '_', '.', '-')")
    from . import backbones

    try:
        backbone = backbones.get(value)
    except KeyError:
        known = ", ".join(b.describe()["id"] for b in backbones.all_backbones())
        raise NotFound(f"unknown network {value!r}; known networks: {known}") from None
    if runnable:
        avail = backbone.availability()
        if not avail.available:
            raise Unavailable(f"network {value} is not available here: {avail.message}")
    return value


def check_keys(params, allowed):
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidParameter(f"unknown parameter {unknown[0]!r}; expected one of: {', '.join(sorted(allowed))}")


def clean_all(declared, given, face="web"):
    """Check ``given`` (a dict) against the declared parameters of one step; unknown names are refused.
    On the web, parameters declared ``web=False`` do not exist."""
    params = [p for p in declared if face != "web" or p.web]
    check_keys(given, {p.name for p in params})
    return {p.name: p.clean(given.get(p.name)) for p in params}


def add_cli_arguments(parser: argparse.ArgumentParser, declared):
    for p in declared:
        if p.cli:
            p.add_to_parser(parser)
