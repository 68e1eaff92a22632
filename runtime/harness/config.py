"""Scenario files: TOML in, attrs classes out (via cattrs), and errors a user can act on.

Generic: the schema itself belongs to a model (``pagehint.actors.scenario`` for the guest).
Every error is a ``ConfigError`` whose lines name the file, the key path and what was
expected; the CLI prints them and exits 2.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import inspect
import itertools
import math
import textwrap
import tomllib
import typing
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import attrs
import cattrs
import tomli_w
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.errors import (
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn

from ..errors import PagehintError

_C = TypeVar("_C")


class ConfigError(PagehintError):
    """Bad input in a scenario: each line names where and what was expected."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        self.blamed = [(source, problem) for problem in self.problems]
        super().__init__(self._text())

    def _text(self) -> str:
        return "\n".join(f"{source}: {problem}" for source, problem in self.blamed)

    def blamed_on(self, origins: Mapping[str, str]) -> ConfigError:
        """This error with each problem about a key set elsewhere than the file (``origins``:
        dotted key -> ``--set KEY=VALUE``, a sweep's factor) blamed where it was set."""
        for index, (_, problem) in enumerate(self.blamed):
            key, _separator, why = problem.partition(": ")
            owner = _owning_key(key, origins)
            if owner is not None:
                shown = why if owner == key else problem
                self.blamed[index] = (origins[owner], shown)
        self.args = (self._text(),)
        return self

    def within(self, context: str) -> ConfigError:
        """This error, each source followed by ``context`` (which run of a sweep)."""
        self.blamed = [(f"{source} ({context})", problem) for source, problem in self.blamed]
        self.args = (self._text(),)
        return self


def _owning_key(key: str, origins: Mapping[str, str]) -> str | None:
    """The longest key of ``origins`` that is ``key`` or a table (or array) holding it."""
    owners = [
        origin
        for origin in origins
        if key == origin or key.startswith((f"{origin}.", f"{origin}["))
    ]
    return max(owners, key=len, default=None)


class ConfigNotice(UserWarning):
    """A config that loads, but not quite as written (a key dropped on migration, a plugin
    that does not load): issued with ``warnings.warn`` and shown by the CLI on stderr."""


@contextmanager
def notices_shown_as(show: Callable[[str], None] | None) -> Iterator[None]:
    """Within: each ``ConfigNotice`` goes to ``show`` (None: nowhere), once per message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if show is None else "default", ConfigNotice)
        original = warnings.showwarning

        def showwarning(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if show is not None and issubclass(category, ConfigNotice):
                show(str(message))
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        yield


class TableKeysError(ValueError):
    """Keys of a table that a model's structure hook refuses, each with why; reported by key
    path like cattrs' own errors (``policy.array_size: ...``)."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{key}: {why}" for key, why in self.problems.items()))


def load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read the scenario file: {error.strerror}"]) from None
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [f"TOML syntax error: {error}"]) from None


def apply_overrides(
    document: dict[str, Any], overrides: Iterable[str], flag: str = "--set"
) -> dict[str, Any]:
    """Apply ``KEY.PATH=VALUE`` overrides; VALUE is a TOML literal, or else plain text. A
    malformed one is blamed on ``flag``, the option that gave it."""
    values: dict[str, Any] = {}
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator:
            raise ConfigError(flag, [f"expected KEY.PATH=VALUE, got {override!r}"])
        try:
            values[key.strip()] = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = text.strip()  # unquoted text such as policy.name=bitmap
    return apply_values(document, values, flag)


def override_origins(overrides: Iterable[str], flag: str = "--set") -> dict[str, str]:
    """Where each overridden key was set, for ``ConfigError.blamed_on``: key -> the option."""
    origins = {}
    for override in overrides:
        key, _, text = override.partition("=")
        origins[key.strip()] = f"{flag} {key.strip()}={text.strip()}"
    return origins


def apply_values(
    document: dict[str, Any], values: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """A copy of ``document`` with each dotted ``KEY.PATH`` set to its value."""
    result = _deep_copy(document)
    for key, value in values.items():
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(source, [f"{key!r} is not a KEY.PATH"])
        *parents, leaf = key.split(".")
        table = result
        for depth, part in enumerate(parents):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(source, [f"{key}: {where} is a value, not a table"])
            table = child
        table[leaf] = value
    return result


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {"guest": {"vcpus": 4}} -> {"guest.vcpus": 4}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _deep_copy(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in document.items()}


def make_converter() -> cattrs.Converter:
    """A converter that refuses unknown keys and reports every problem with its path.

    Scalars are taken as written, never coerced: cattrs' defaults call ``bool(value)`` and
    ``int(value)``, so ``"no"`` would be true and ``2.9`` two vCPUs. A float accepts an integer
    (TOML writes ``1`` for 1.0) but not NaN or infinity; a choice names its choices.
    """
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook_func(_is_choice, _one_of)
    converter.register_structure_hook_factory(
        attrs.has,
        lambda kind: _expecting(Mapping, "a table", make_dict_structure_fn(kind, converter)),
    )
    converter.register_structure_hook_factory(
        _is_homogeneous_tuple,
        lambda kind: _expecting(
            list | tuple, "an array", homogenous_tuple_structure_factory(kind, converter)
        ),
    )
    return converter


def _is_choice(kind: Any) -> bool:
    origin: Any = typing.get_origin(kind)
    return origin is typing.Literal


def _is_homogeneous_tuple(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def _expecting(shape: Any, what: str, hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``hook``, after checking that the value is a ``shape`` (a table, an array) at all."""

    def structure_checked(value: Any, kind: Any) -> Any:
        if not isinstance(value, shape):
            raise ValueError(f"expected {what}, got {_shown(value)}")
        return hook(value, kind)

    return structure_checked


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_shown(value)}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_shown(value)}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {_shown(value)}")
    return float(value)


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a quoted string, got {_shown(value)}")
    return value


def _one_of(value: Any, kind: Any) -> Any:
    choices = typing.get_args(kind)
    if value not in choices or type(value) is not type(choices[0]):
        names = ", ".join(_shown(choice) for choice in choices)
        raise ValueError(f"expected one of {names}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value as the user wrote it in TOML (``"no"``, ``2.9``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return repr(value)


def structure(
    converter: cattrs.Converter, document: dict[str, Any], cls: type[_C], source: str
) -> _C:
    try:
        return converter.structure(document, cls)
    except (ClassValidationError, IterableValidationError) as error:
        raise ConfigError(source, _describe(error, cls)) from None
    except ValueError as error:
        raise ConfigError(source, [str(error)]) from None


def _describe(error: BaseException, root: type) -> list[str]:
    """cattrs' errors as 'key.path: what was expected', with a suggestion for unknown keys."""
    problems: list[str] = []
    for exc, path in _leaves(error, ""):
        where = path.lstrip(".") or "(top level)"
        if isinstance(exc, ForbiddenExtraKeysError):
            valid = [field.name for field in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
            for key in sorted(exc.extra_fields):
                prefix = f"{where}." if path else ""
                problems.append(
                    f"{prefix}{key}: unknown key{suggest(key, valid)} "
                    f"(valid keys: {', '.join(valid)})"
                )
        elif isinstance(exc, TableKeysError):
            prefix = f"{where}." if path else ""
            problems += [f"{prefix}{key}: {why}" for key, why in exc.problems.items()]
        elif isinstance(exc, KeyError) and exc.args:
            problems.append(f"{where}: required key {exc.args[0]!r} is missing")
        else:
            problems.append(f"{where}: {_plain(exc)}")
    return problems or [f"invalid {root.__name__}: {error}"]


def suggest(key: str, valid: Iterable[str]) -> str:
    """'; did you mean ...?' for the closest valid key, or nothing."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _plain(exc: BaseException) -> str:
    """One leaf error as a sentence: its own words, never a class name or a typing form."""
    if isinstance(exc, TypeError | ValueError | BaseValidationError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def _leaves(error: BaseException, path: str) -> Iterable[tuple[BaseException, str]]:
    if isinstance(error, ClassValidationError | IterableValidationError):
        with_notes, without = error.group_exceptions()
        for sub, note in with_notes:
            name = getattr(note, "name", None)
            index = getattr(note, "index", None)
            step = f".{name}" if name is not None else f"[{index}]"
            yield from _leaves(sub, path + step)
        for sub in without:
            yield from _leaves(sub, path)
    else:
        yield error, path


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML text of an unstructured config; keys whose value is None are left out."""
    cleaned: dict[str, Any] = _without_none(document)
    return tomli_w.dumps(cleaned)


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None values (an unset optional key), in tables and arrays."""
    if isinstance(value, Mapping):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_none(item) for item in value]
    return value


def config_hash(toml_text: str) -> str:
    """Identifies a resolved config (what the run actually used): 16 hex digits."""
    return hashlib.blake2b(toml_text.encode(), digest_size=8).hexdigest()


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: the string literal right after its annotation in the class
    (or in the base class that declares it).

    Fields are documented once, in the code, where the next engineer reads them; this reads
    them back from the source for ``pagehint config --explain``.
    """
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if attrs.has(base):
            docs |= _own_field_docs(base)
    return docs | _own_field_docs(cls)


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body.body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def explain(
    cls: type,
    converter: cattrs.Converter,
    prefix: str = "",
    *,
    defaults: Any = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Every key of a config schema with its default and documentation, as TOML-like lines.

    ``defaults``: an instance whose values are the defaults shown (a table whose default is
    an instance of a subclass is explained as that subclass); ``skip``: keys left out. A table
    class with an ``explain_keys(prefix)`` classmethod documents its own keys.
    """
    if defaults is not None:
        cls = type(defaults)
    lines: list[str] = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)  # resolves string annotations
    nested: list[tuple[str, Any, Any]] = []
    for field in attrs.fields(cls):
        if field.name in skip:
            continue
        kind = hints[field.name]
        default = getattr(defaults, field.name) if defaults is not None else field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        variants = _variants(kind) if kind else []
        if attrs.has(kind) or variants or _is_table_array(kind):
            nested.append((field.name, kind, default))
            continue
        shown = "(required)" if default is attrs.NOTHING else _toml_value(converter, default)
        lines.append(f"{field.name} = {shown}")
        if docs.get(field.name):
            lines.extend(f"    # {line}" for line in textwrap.wrap(docs[field.name], 88))
    for name, kind, default in nested:
        path = f"{prefix}{name}"
        if hasattr(kind, "explain_keys"):  # a table that documents its own keys
            lines += ["", f"[{path}]", *kind.explain_keys(f"{path}.")]
        elif attrs.has(kind):
            instance = default if attrs.has(type(default)) else None
            lines += ["", f"[{path}]", *explain(kind, converter, f"{path}.", defaults=instance)]
        elif _is_table_array(kind):
            item = typing.get_args(kind)[0]
            lines += ["", f"[[{path}]]  # a list of tables", *explain(item, converter, f"{path}.")]
        else:
            for variant in _variants(kind):
                lines += ["", f"[{path}]  # one of several: this is {variant.__name__}"]
                if hasattr(variant, "explain_keys"):
                    lines += variant.explain_keys(f"{path}.")
                else:
                    lines += explain(variant, converter, f"{path}.")
    return lines


def _variants(kind: Any) -> list[Any]:
    """The attrs classes of a union, unions within it flattened."""
    found: list[Any] = []
    for variant in typing.get_args(kind):
        found += _variants(variant) if typing.get_args(variant) else [variant]
    return [variant for variant in found if attrs.has(variant)]


def _is_table_array(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and bool(args) and attrs.has(args[0])


def _toml_value(converter: cattrs.Converter, value: Any) -> str:
    plain = _without_none(converter.unstructure(value))
    if plain is None:
        return "(unset)"
    return tomli_w.dumps({"v": plain}).partition("=")[2].strip()
