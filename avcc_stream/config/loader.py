"""Read a YAML config file into an `AppConfig`, with errors that point at file:line:column.

The YAML is composed into a node tree first (so every value keeps its position), checked for
duplicate keys, `${ENV_VAR}` references are expanded in place, and only then constructed into
plain data and validated by pydantic. Each pydantic error's `loc` is walked back down the node
tree to find the line to blame; cross-field rules carry their own key path (`RuleError.loc`).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from avcc_stream.config.app import AppConfig
from avcc_stream.config.common import RuleError
from avcc_stream.security import redact_url

ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MERGE_TAG = "tag:yaml.org,2002:merge"
SECRET_KEY_PARTS = ("password", "secret", "token")
Loc = tuple[Any, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where it is and what was expected."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str  # dotted key path, e.g. cameras.gate1.alerts.levels.warn ("" = whole file)
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `issues` lists every problem found (one per line in str)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> AppConfig:
    """Read, expand and validate the YAML file at `path`; raise ConfigError on any problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise ConfigError([ConfigIssue(name, None, None, "", f"cannot read the config file: {reason}")]) from None
    return parse_config(text, name, environ)


def parse_config(text: str, file: str = "<string>", environ: Mapping[str, str] | None = None) -> AppConfig:
    """Like load_config, for YAML text already in memory (`file` names it in messages)."""
    environ = os.environ if environ is None else environ
    root = _compose(text, file)
    issues = list(_duplicate_keys(root, file))
    issues += _expand_env(root, file, environ)
    if issues:
        raise ConfigError(issues)
    data = _construct(root, file)
    if data is None:
        raise ConfigError([ConfigIssue(file, None, None, "", "the file is empty: expected a mapping with a cameras: section")])
    if not isinstance(data, dict):
        raise ConfigError([_issue_at(file, root, None, "", "expected a mapping of sections (model:, mqtt:, cameras:, ...) at the top level")])
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_issues(exc, root, file)) from None


# --- YAML --------------------------------------------------------------------------------


def _mark_issue(file: str, exc: yaml.MarkedYAMLError, what: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    return ConfigIssue(file, line, column, "", f"{what}: {problem}{context}")


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_mark_issue(file, exc, "YAML syntax error")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, None, "", f"YAML syntax error: {exc}")]) from None


def _construct(root: yaml.Node | None, file: str) -> Any:
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_mark_issue(file, exc, "unsupported YAML")]) from None
    finally:
        loader.dispose()


def _walk(node: yaml.Node | None, path: tuple[str, ...] = ()) -> Iterator[tuple[yaml.Node, tuple[str, ...]]]:
    """Every node with its key path, each node once (aliases share nodes)."""
    seen: set[int] = set()
    stack = [(node, path)]
    while stack:
        current, current_path = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current, current_path
        if isinstance(current, yaml.MappingNode):
            for key, value in reversed(current.value):
                stack.append((value, current_path + (str(key.value),) if key.tag != MERGE_TAG else current_path))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in reversed(list(enumerate(current.value))):
                stack.append((item, current_path + (str(index),)))


def _duplicate_keys(root: yaml.Node | None, file: str) -> Iterator[ConfigIssue]:
    """PyYAML keeps the last of two equal keys silently; a venue's typo must not vanish."""
    for node, path in _walk(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first_seen: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                continue
            identity = (key.tag, key.value)
            if identity in first_seen:
                first_line = first_seen[identity].start_mark.line + 1
                yield _issue_at(file, key, None, ".".join(path + (key.value,)),
                                f"duplicate key {key.value!r} (first defined at line {first_line}); remove one")
            else:
                first_seen[identity] = key


def _expand_env(root: yaml.Node | None, file: str, environ: Mapping[str, str]) -> list[ConfigIssue]:
    """Replace `${NAME}` / `${NAME:-default}` in string values; `$$` is a literal `$`."""
    issues: list[ConfigIssue] = []
    for node, path in _walk(root):
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and "$" in node.value):
            continue

        def substitute(match: re.Match[str], node: yaml.Node = node, path: tuple[str, ...] = path) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            issues.append(_issue_at(file, node, None, ".".join(path),
                                    f"environment variable {name} is not set (referenced as ${{{name}}}); "
                                    f"set it, or write ${{{name}:-default}}"))
            return ""

        node.value = ENV_REFERENCE.sub(substitute, node.value)
    return issues


# --- pydantic errors -> positions ----------------------------------------------------------


UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


@dataclass
class _Located:
    node: yaml.Node | None  # the deepest node found on the loc's path
    key_node: yaml.Node | None  # the key that led to it, when it was a mapping value
    complete: bool  # every element of the loc was found in the file
    path: str  # the loc as a dotted key path, without pydantic's union-member tags


def _mapping_lookup(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The key/value nodes for `key`. Constructing the data flattened `<<` merges into the
    mapping (merged keys first), so the last match is the one that took effect."""
    merged: list[yaml.Node] = []
    for key_node, value_node in reversed(node.value):
        if key_node.tag == MERGE_TAG:
            merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
        elif isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    for source in merged:  # `<<: *defaults` keys count only when not set directly
        if isinstance(source, yaml.MappingNode):
            found = _mapping_lookup(source, key)
            if found:
                return found
    return None


def _join(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _locate(root: yaml.Node | None, loc: Loc) -> _Located:
    """Walk `loc` down the node tree as far as the file goes."""
    node, key_node = root, None
    parts: list[str | int] = []
    found_all = True
    for element in loc:
        if element == "[key]":
            node = key_node  # a mapping key failed its own validation (e.g. a camera name)
            break
        if not found_all:
            if not (isinstance(element, str) and UNION_TAG.fullmatch(element)):
                parts.append(element)
            continue
        if isinstance(node, yaml.MappingNode):
            found = _mapping_lookup(node, str(element))
            if found is None:
                found_all = False
                parts.append(element)
                continue
            key_node, node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int) and 0 <= element < len(node.value):
            node, key_node = node.value[element], None
        elif isinstance(element, str) and not isinstance(node, yaml.MappingNode):
            continue  # a union member's tag (e.g. 'list[str]'), not a key in the file
        else:
            found_all = False
        parts.append(element)
    return _Located(node, key_node, found_all, _join(parts))


def _issue_at(file: str, node: yaml.Node | None, key_node: yaml.Node | None, path: str, message: str) -> ConfigIssue:
    """Point at a scalar's value, or at the key that opens a section."""
    target = node if isinstance(node, yaml.ScalarNode) or key_node is None else key_node
    if target is None:
        return ConfigIssue(file, None, None, path, message)
    return ConfigIssue(file, target.start_mark.line + 1, target.start_mark.column + 1, path, message)


def position_of(root: yaml.Node | None, loc: Loc) -> tuple[int, int] | None:
    """1-based (line, column) of the value at key path `loc` in a composed YAML file (the key
    itself where the value is a section), or None when the file does not hold the whole path."""
    located = _locate(root, tuple(loc))
    if not located.complete:
        return None
    issue = _issue_at("", located.node, located.key_node, "", "")
    return None if issue.line is None or issue.column is None else (issue.line, issue.column)


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            annotation = models[0] if models else members[0]
        else:
            return annotation


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc`, if any."""
    annotation: Any = AppConfig
    for element in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(element))
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _shown_input(loc: Loc, value: Any) -> str | None:
    """The offending value for the message, unless it is secret or too big to help."""
    if any(part in str(element).lower() for element in loc for part in SECRET_KEY_PARTS):
        return None
    if isinstance(value, str):
        return repr(redact_url(value) if "://" in value else value)[:80]
    if isinstance(value, (int, float, bool)) or value is None:
        return repr(value)
    return None


def _message(error: Mapping[str, Any], loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        model = _model_at(loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(unknown, allowed, n=1)
        text = f"unknown key {unknown!r}"
        if hint:
            text += f"; did you mean {hint[0]!r}?"
        if allowed:
            text += f" (expected one of: {', '.join(allowed)})"
        return text
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(error["msg"]).removeprefix("Value error, ")
    text = str(error["msg"])
    text = text[0].lower() + text[1:] if text else text
    shown = _shown_input(loc, error.get("input"))
    return f"{text} (got {shown})" if shown is not None else text


def _inherited_source(loc: Loc) -> Loc | None:
    """Where a camera's inherited value comes from: camera_defaults.* or alerts.*."""
    if len(loc) < 3 or loc[0] != "cameras":
        return None
    rest = loc[2:]
    if rest[0] == "alerts":
        return ("alerts",) + tuple(rest[1:])
    return ("camera_defaults",) + tuple(rest)


def _validation_issues(exc: ValidationError, root: yaml.Node | None, file: str) -> list[ConfigIssue]:
    entries: list[tuple[Loc, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
        if isinstance(cause, RuleError):
            loc += cause.loc
        entries.append((loc, _message(error, loc)))

    reported_globally = {
        (_locate(root, loc).path, message) for loc, message in entries if loc[:1] != ("cameras",)
    }
    positions: dict[str, ConfigIssue] = {}
    messages_by_path: dict[str, list[str]] = {}
    for loc, message in entries:
        located = _locate(root, loc)
        source = _inherited_source(loc)
        if not located.complete and source is not None:
            source_located = _locate(root, source)
            if source_located.complete:
                if (source_located.path, message) in reported_globally:
                    continue  # the global default is wrong: said once, at its own line
                line = _issue_at(file, source_located.node, source_located.key_node, "", "").line
                message += f" (value inherited from {source_located.path} at line {line})"
        if located.path not in positions:
            positions[located.path] = _issue_at(file, located.node, located.key_node, located.path, "")
            messages_by_path[located.path] = []
        if message not in messages_by_path[located.path]:
            messages_by_path[located.path].append(message)
    # A value failing every member of a union gives one error per member: say them together.
    return [
        ConfigIssue(position.file, position.line, position.column, path, " or ".join(messages_by_path[path]))
        for path, position in positions.items()
    ]
