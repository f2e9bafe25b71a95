"""Tools the model may call: declared from plain Python functions, validated, run, and sent back.

* :func:`tool` turns a function (sync or ``async``) into a :class:`Tool`, deriving the input's JSON
  Schema from its type hints and docstring with pydantic (which also validates and converts each call's
  input into the annotated types: enums, dataclasses, models, dates...). :class:`Tool` declares one by
  hand; one without ``execute`` runs in the browser (a *client-side* tool).
* :func:`run_tools` / :func:`run_tools_sync` run a model turn's calls concurrently, each with a timeout.
  Whatever goes wrong (unknown tool, input that is not JSON or breaks the schema, an exception, a
  timeout, an output too large) becomes an error :class:`~.parts.ToolResult` the model reads, never an
  exception out of the flow; tracebacks go to the log only.
* The request shapes: each family's tool declarations (``toolConfig`` / ``tools``), a model turn's calls
  as the assistant turn's blocks, and results as the next user turn's blocks (:data:`TOOL_FORMATS`).
* :func:`sign_call` / :func:`verify_call`: a call id or an approval request handed to the browser comes
  back signed for this user, this tool and this exact input, so no server state is needed to refuse a
  forged, altered or someone else's tool result or approval.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import logging
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, TypeAlias, overload

import pydantic
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core import signing
from django.core.exceptions import SuspiciousOperation
from django.db import close_old_connections
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .client import LazyPool
from .conf import stream_settings
from .parts import ToolCall, ToolResult, unstorable

__all__ = [
    "TOOL_FORMATS",
    "FunctionTool",
    "ParsedDocstring",
    "Tool",
    "ToolCallAltered",
    "ToolCallExpired",
    "ToolCallForged",
    "ToolCallNotYours",
    "ToolCallRefused",
    "ToolError",
    "ToolFormat",
    "ToolInputError",
    "ToolOutputError",
    "ToolRun",
    "anthropic_call_blocks",
    "anthropic_request_tools",
    "anthropic_result_blocks",
    "client_tool_result",
    "converse_call_blocks",
    "converse_request_tools",
    "converse_result_blocks",
    "denied_result",
    "nova_request_tools",
    "parse_docstring",
    "request_binding",
    "run_tools",
    "run_tools_sync",
    "sign_call",
    "tool",
    "tools_by_name",
    "verify_call",
]

logger = logging.getLogger("django_bedrock_stream.tools")

#: Bedrock's rule for tool names (Converse ``ToolName``; Anthropic's is the same).
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

#: ``needs_approval``: a constant, or ``(input, request) -> bool`` deciding per call.
ApprovalRule: TypeAlias = bool | Callable[[Any, HttpRequest | None], bool]

#: ``tool_choice``: ``"auto"`` (the model decides), ``"any"`` (it must call one) or a tool's name.
ToolChoice: TypeAlias = str


# -- errors ------------------------------------------------------------------------------------------


class ToolError(Exception):
    """Raise it in a tool to tell the model what went wrong: its message is the error result the model
    (and the browser) sees. Any other exception gives a generic message, its traceback goes to the log."""


class ToolInputError(ValueError):
    """A call's input is not a JSON object matching the tool's schema (the message says where)."""


class ToolOutputError(ValueError):
    """A client-side tool's output (posted by the browser) does not match the tool's ``output_schema``."""


# -- declaring tools -----------------------------------------------------------------------------------


class Tool:
    """A tool declared by hand: its ``input_schema`` is a JSON Schema of ``"type": "object"``.

    ``execute(input)`` receives the validated input (a dict); when it has a parameter named ``request``,
    the Django request is passed as ``request=``. It may be a plain or an ``async`` function. Without
    ``execute`` the tool is *client-side*: the browser runs it and posts the output back (checked against
    ``output_schema`` when given, see :func:`client_tool_result`).

    ``needs_approval``: ``True`` to ask the user before every call, or ``(input, request) -> bool`` to
    decide per call (an exception there counts as ``True``: it fails closed).

    Inputs of hand-written schemas are checked for the common JSON Schema keywords (``type``,
    ``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, lengths,
    bounds, ``pattern``, ``anyOf``/``oneOf``/``allOf``/``not``, local ``$ref``); other keywords are
    passed to the model but not enforced.
    """

    def __init__(
        self,
        name: str,
        description: str,
        input_schema: Mapping[str, Any],
        execute: Callable[..., Any] | None = None,
        needs_approval: ApprovalRule = False,
        *,
        output_schema: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ValueError(
                f"Invalid tool name {name!r}: Bedrock needs 1 to 64 ASCII letters, digits, '_' or '-'."
            )
        if execute is not None and not callable(execute):
            raise TypeError(f"Tool {name!r}: execute must be callable or None.")
        if not (isinstance(needs_approval, bool) or callable(needs_approval)):
            raise TypeError(f"Tool {name!r}: needs_approval must be a bool or a callable (input, request) -> bool.")
        self.name = name
        self.description = (description or "").strip()
        self.input_schema = _plain_schema(input_schema, f"Tool {name!r}: input_schema")
        if self.input_schema.get("type") != "object":
            raise ValueError(f"Tool {name!r}: input_schema must be a JSON Schema with \"type\": \"object\".")
        self.output_schema = (
            None if output_schema is None else _plain_schema(output_schema, f"Tool {name!r}: output_schema")
        )
        self.execute = execute
        self.needs_approval = needs_approval
        self._pass_request = execute is not None and _accepts_keyword(execute, "request")

    @property
    def client_side(self) -> bool:
        """The browser runs this tool (it has no ``execute``)."""
        return self.execute is None

    @property
    def is_async(self) -> bool:
        return self.execute is not None and iscoroutinefunction(self.execute)

    def __repr__(self) -> str:
        kind = "client-side " if self.client_side else ""
        return f"<{kind}{type(self).__name__} {self.name!r}>"

    def validate_input(self, input: Any) -> Any:
        """The arguments :meth:`invoke` takes for this input; :class:`ToolInputError` when it does not fit."""
        if not isinstance(input, Mapping):
            raise ToolInputError(f"The input of tool {self.name!r} must be a JSON object.")
        errors = _schema_errors(self.input_schema, input, "", self.input_schema)
        if errors:
            raise ToolInputError(_input_error_message(self.name, errors))
        return dict(input)

    def validate_output(self, output: Any) -> None:
        """Check a client-side tool's output against ``output_schema`` (:class:`ToolOutputError`)."""
        if self.output_schema is None:
            return
        errors = _schema_errors(self.output_schema, output, "", self.output_schema)
        if errors:
            shown = "; ".join(errors[:10])
            raise ToolOutputError(f"The output of tool {self.name!r} does not match its schema: {shown}")

    def requires_approval(self, input: Any, request: HttpRequest | None = None) -> bool:
        """Whether this call must wait for the user's approval."""
        rule = self.needs_approval
        if isinstance(rule, bool):
            return rule
        try:
            return bool(rule(input, request))
        except Exception:
            logger.exception("needs_approval of tool %r raised; the call will ask for approval", self.name)
            return True

    def invoke(self, arguments: Any, request: HttpRequest | None = None) -> Any:
        """Call ``execute`` with validated arguments (a coroutine for an async tool)."""
        if self.execute is None:
            raise TypeError(f"Tool {self.name!r} is client-side: the browser runs it.")
        if self._pass_request:
            return self.execute(arguments, request=request)
        return self.execute(arguments)


class FunctionTool(Tool):
    """A :class:`Tool` made by :func:`tool` from a function; calling it calls the function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: ApprovalRule = False,
    ) -> None:
        doc = parse_docstring(inspect.getdoc(func))
        tool_name = name if name is not None else getattr(func, "__name__", "")
        self._arguments, self._request_param = _arguments_model(func, tool_name, doc.params)
        schema = _tool_schema(self._arguments)
        super().__init__(
            tool_name,
            doc.description if description is None else description,
            schema,
            execute=func,
            needs_approval=needs_approval,
        )
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.execute is not None
        return self.execute(*args, **kwargs)

    def validate_input(self, input: Any) -> dict[str, Any]:
        """The function's keyword arguments, converted to their annotated types by pydantic."""
        if not isinstance(input, Mapping):
            raise ToolInputError(f"The input of tool {self.name!r} must be a JSON object.")
        try:
            model = self._arguments.model_validate(input)
        except pydantic.ValidationError as err:
            errors = [f"{_location(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
            raise ToolInputError(_input_error_message(self.name, errors)) from None
        fields = type(model).model_fields
        return {info.alias or field: getattr(model, field) for field, info in fields.items()}

    def invoke(self, arguments: Any, request: HttpRequest | None = None) -> Any:
        assert self.execute is not None
        if self._request_param:
            return self.execute(**arguments, **{self._request_param: request})
        return self.execute(**arguments)


@overload
def tool(func: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, needs_approval: ApprovalRule = False
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: ApprovalRule = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a function into a tool: ``@tool`` or ``@tool(name=..., description=..., needs_approval=...)``.

    The name defaults to the function's, the description to its docstring's first paragraph; each
    parameter's type hint (``Annotated[..., Field(...)]`` constraints included) and its description from
    the docstring's ``Args:`` / ``Parameters`` / ``:param x:`` entries make the input schema. A parameter
    annotated ``HttpRequest`` receives the request instead (it is not part of the schema). The model's
    input is validated and converted by pydantic before the call; unknown keys are refused.
    """

    def decorate(function: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(function, name=name, description=description, needs_approval=needs_approval)

    return decorate if func is None else decorate(func)


def tools_by_name(tools: Iterable[Tool] | Mapping[str, Tool]) -> dict[str, Tool]:
    """The tools keyed by name; two tools with one name are a mistake (``ValueError``)."""
    registry: dict[str, Tool] = {}
    for item in tools.values() if isinstance(tools, Mapping) else tools:
        if not isinstance(item, Tool):
            raise TypeError(f"Expected a Tool (use @tool or Tool(...)), got {type(item).__name__}.")
        if item.name in registry:
            raise ValueError(f"Two tools are named {item.name!r}.")
        registry[item.name] = item
    return registry


# -- schemas from signatures ---------------------------------------------------------------------------


class _ToolJsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every field (noise in the model's context)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _arguments_model(
    func: Callable[..., Any], name: str, docs: Mapping[str, str]
) -> tuple[type[pydantic.BaseModel], str | None]:
    """A pydantic model of the function's parameters (each under an alias, so a parameter named like a
    ``BaseModel`` attribute cannot clash), and the name of the parameter that takes the request."""
    if not callable(func):
        raise TypeError(f"@tool needs a function, got {type(func).__name__}.")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as err:
        raise TypeError(f"@tool: cannot resolve the type hints of {name!r}: {err}") from err
    fields: dict[str, Any] = {}
    request_param = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"@tool {name!r}: parameter {param.name!r} must be passable by keyword (no *args, **kwargs or /)."
            )
        hint = hints.get(param.name, Any)
        if _is_request_hint(hint):
            request_param = param.name
            continue
        field = pydantic.Field(alias=param.name, description=docs.get(param.name) or None)
        default = ... if param.default is param.empty else param.default
        fields[f"f_{param.name}"] = (_with_field(hint, field), default)
    try:
        model = pydantic.create_model(
            f"{name or 'tool'}_input", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
    except pydantic.PydanticUserError as err:  # a hint pydantic cannot turn into a schema
        raise TypeError(f"@tool {name!r}: {err}") from err
    return model, request_param


def _with_field(hint: Any, field: Any) -> Any:
    """``Annotated[hint, field]``, with the hint's own ``Annotated`` metadata after ours, so that what the
    author wrote there (``Field(description=...)``) wins over the docstring."""
    if typing.get_origin(hint) is Annotated:
        base, *metadata = typing.get_args(hint)
        return Annotated[(base, field, *metadata)]
    return Annotated[hint, field]


def _is_request_hint(hint: Any) -> bool:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] if _is_union(hint) else [hint]
    return bool(options) and all(isinstance(option, type) and issubclass(option, HttpRequest) for option in options)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _tool_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(schema_generator=_ToolJsonSchema)
    schema.pop("title", None)
    return _inline_refs(schema)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace ``{"$ref": "#/$defs/X"}`` by X itself: some models follow references poorly. A recursive
    schema (a tree of models) cannot be inlined and is returned as pydantic made it."""
    defs = schema.get("$defs")
    if not defs:
        return schema
    prefix = "#/$defs/"

    class Recursive(Exception):
        pass

    def resolve(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] in defs:
                target = ref[len(prefix):]
                if target in seen:
                    raise Recursive
                siblings = {key: resolve(value, seen) for key, value in node.items() if key != "$ref"}
                return {**resolve(defs[target], seen | {target}), **siblings}
            return {key: resolve(value, seen) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        return node

    try:
        inlined: dict[str, Any] = resolve(schema, frozenset())
        return inlined
    except Recursive:
        return schema


def _plain_schema(schema: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A deep, JSON-only copy (what is sent to Bedrock is exactly what is checked)."""
    if not isinstance(schema, Mapping):
        raise TypeError(f"{what} must be a JSON Schema dict.")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(schema))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not JSON: {err}") from err
    return copied


def _accepts_keyword(func: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = parameters.get(keyword)
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


# -- docstrings ----------------------------------------------------------------------------------------


class ParsedDocstring(NamedTuple):
    """A docstring's first paragraph (one line) and its parameters' descriptions."""

    description: str
    params: dict[str, str]


_GOOGLE_PARAM_SECTIONS = {
    "args", "arguments", "parameters", "params", "keyword args", "keyword arguments", "other parameters",
}
_GOOGLE_SECTIONS = _GOOGLE_PARAM_SECTIONS | {
    "returns", "return", "yields", "yield", "raises", "examples", "example", "note", "notes", "attributes",
    "see also", "warning", "warnings", "todo", "references",
}
_NUMPY_PARAM_SECTIONS = {"parameters", "other parameters"}
_UNDERLINE = re.compile(r"\s*-{3,}\s*")
_GOOGLE_ENTRY = re.compile(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NUMPY_ENTRY = re.compile(r"\*{0,2}([\w, *]+?)\s*(?::.*)?")
_REST_PARAM = re.compile(r":(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)")
_REST_FIELD = re.compile(r":\w+[^:]*:")


def parse_docstring(doc: str | None) -> ParsedDocstring:
    """Read Google (``Args:``), numpy (``Parameters`` + dashes) and reST (``:param x:``) docstrings."""
    if not doc:
        return ParsedDocstring("", {})
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    for number, line in enumerate(lines):
        if not line.strip():
            if description:
                break
            continue
        if _section_at(lines, number):
            break
        description.append(line.strip())
    params = {**_rest_params(lines), **_numpy_params(lines), **_google_params(lines)}
    return ParsedDocstring(" ".join(description), params)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _section_at(lines: Sequence[str], number: int) -> bool:
    text = lines[number].strip()
    if text.endswith(":") and text[:-1].strip().lower() in _GOOGLE_SECTIONS:
        return True
    if number + 1 < len(lines) and _UNDERLINE.fullmatch(lines[number + 1]) and text.lower() in _GOOGLE_SECTIONS:
        return True
    return bool(_REST_FIELD.match(text))


_Entry: TypeAlias = Callable[[str], tuple[str, str] | None]


def _entries(lines: Sequence[str], start: int, stop: Callable[[int], bool], entry: _Entry) -> dict[str, str]:
    """A section's entries from line ``start`` on: a line at the section's indentation names parameters
    (``entry`` gives their comma-separated names and any description on that line), deeper lines
    continue the description, until ``stop``."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    base = None
    for number in range(start, len(lines)):
        line = lines[number]
        if not line.strip():
            continue
        if stop(number):
            break
        if base is None:
            base = _indent(line)
        if _indent(line) <= base:
            parsed = entry(line.strip())
            current = None if parsed is None else ([parsed[1].strip()] if parsed[1].strip() else [])
            for name in (parsed[0].split(",") if parsed else ()):
                if name.strip().lstrip("*") and current is not None:
                    found[name.strip().lstrip("*")] = current
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(text) for name, text in found.items()}


def _google_entry(text: str) -> tuple[str, str] | None:
    match = _GOOGLE_ENTRY.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


def _numpy_entry(text: str) -> tuple[str, str] | None:
    match = _NUMPY_ENTRY.fullmatch(text)
    return (match.group(1), "") if match else None


def _dedented(lines: Sequence[str], header: int, number: int) -> bool:
    return _indent(lines[number]) <= header


def _google_params(lines: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for number, line in enumerate(lines):
        text = line.strip()
        if text.endswith(":") and text[:-1].strip().lower() in _GOOGLE_PARAM_SECTIONS:
            header = _indent(line)
            params.update(_entries(lines, number + 1, functools.partial(_dedented, lines, header), _google_entry))
    return params


def _numpy_params(lines: Sequence[str]) -> dict[str, str]:
    def next_section(n: int) -> bool:  # a heading over dashes
        return n + 1 < len(lines) and bool(_UNDERLINE.fullmatch(lines[n + 1]))

    params: dict[str, str] = {}
    for number, line in enumerate(lines[:-1]):
        if line.strip().lower() in _NUMPY_PARAM_SECTIONS and _UNDERLINE.fullmatch(lines[number + 1]):
            params.update(_entries(lines, number + 2, next_section, _numpy_entry))
    return params


def _rest_params(lines: Sequence[str]) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    field_indent = 0
    for line in lines:
        text = line.strip()
        match = _REST_PARAM.fullmatch(text)
        if match:
            current = [match.group(2).strip()] if match.group(2).strip() else []
            found[match.group(1)] = current
            field_indent = _indent(line)
        elif current is not None and text and _indent(line) > field_indent and not _REST_FIELD.match(text):
            current.append(text)
        else:
            current = None
    return {name: " ".join(text) for name, text in found.items()}


# -- validating JSON against a hand-written schema -----------------------------------------------------


def _input_error_message(name: str, errors: Sequence[str]) -> str:
    shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
    return f"Invalid input for tool {name!r}: {shown}"


def _location(loc: Iterable[Any]) -> str:
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text or "input"


def _is_json_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, (list, tuple))
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    return True  # an unknown type name is not enforced


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality (``True`` is not ``1``)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _resolve_ref(root: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _schema_errors(schema: Any, value: Any, path: str, root: Mapping[str, Any], depth: int = 0) -> list[str]:
    """What in ``value`` breaks ``schema`` (a subset of JSON Schema, see :class:`Tool`)."""
    where = path or "input"
    if schema is True or depth > 50 or not isinstance(schema, Mapping):
        return []
    if schema is False:
        return [f"{where}: not allowed"]
    errors: list[str] = []
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve_ref(root, ref)
        if target is not None:
            errors += _schema_errors(target, value, path, root, depth + 1)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_json_type(value, name) for name in names):
            return [*errors, f"{where}: expected {' or '.join(map(str, names))}"]
    if "enum" in schema and not any(_same_json(value, option) for option in schema["enum"]):
        errors.append(f"{where}: must be one of {json.dumps(schema['enum'])[:200]}")
    if "const" in schema and not _same_json(value, schema["const"]):
        errors.append(f"{where}: must be {json.dumps(schema['const'])[:200]}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match the pattern {schema['pattern']!r}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for keyword, fails, words in (
            ("minimum", lambda v, b: v < b, "less than"),
            ("maximum", lambda v, b: v > b, "more than"),
            ("exclusiveMinimum", lambda v, b: v <= b, "at most"),
            ("exclusiveMaximum", lambda v, b: v >= b, "at least"),
        ):
            bound = schema.get(keyword)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool) and fails(value, bound):
                errors.append(f"{where}: {words} {bound}")
    elif isinstance(value, (list, tuple)):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, (Mapping, bool)):
            for number, item in enumerate(value):
                errors += _schema_errors(items, item, f"{where}[{number}]", root, depth + 1)
    elif isinstance(value, Mapping):
        for key in schema.get("required") or ():
            if key not in value:
                errors.append(f"{_join(path, key)}: required")
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += _schema_errors(properties[key], item, _join(path, key), root, depth + 1)
            elif extra is False:
                errors.append(f"{_join(path, key)}: unknown key")
            elif isinstance(extra, Mapping):
                errors += _schema_errors(extra, item, _join(path, key), root, depth + 1)
    for sub in schema.get("allOf") or ():
        errors += _schema_errors(sub, value, path, root, depth + 1)
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if options:
            matching = sum(not _schema_errors(sub, value, path, root, depth + 1) for sub in options)
            if matching == 0 or (keyword == "oneOf" and matching > 1):
                errors.append(f"{where}: matches {'none' if matching == 0 else 'more than one'} of the allowed shapes")
    if "not" in schema and not _schema_errors(schema["not"], value, path, root, depth + 1):
        errors.append(f"{where}: matches a shape that is not allowed")
    return errors


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


# -- running tools -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One call's fate: its :class:`~.parts.ToolResult` (what the model reads), how long the tool ran
    (seconds; 0 when it did not run) and a ``status``: ``"success"``, ``"error"`` (the tool raised or
    returned something that is not JSON), ``"timeout"`` or ``"invalid"`` (unknown tool, input not JSON or
    not matching the schema: the tool did not run)."""

    call: ToolCall
    result: ToolResult
    duration: float
    status: Literal["success", "error", "timeout", "invalid"]


#: Sync tools run on this pool: never on the event loop, never on Django's thread-sensitive thread.
_tool_pool = LazyPool("TOOL_THREAD_POOL_SIZE", "bedrock-tool")


async def run_tools(
    calls: Iterable[ToolCall],
    tools: Iterable[Tool] | Mapping[str, Tool],
    *,
    timeout: float | None = None,
    request: HttpRequest | None = None,
) -> list[ToolRun]:
    """Run a model turn's tool calls concurrently; one :class:`ToolRun` per call, in the calls' order.

    Async tools run on the event loop, sync ones on a dedicated thread pool. Each has ``timeout``
    seconds (default ``BEDROCK_STREAM["TOOL_TIMEOUT"]``; ``None`` there means no limit). Cancelling
    the caller (a client that went away) cancels the async tools still running; a sync tool cannot be
    interrupted: it finishes on its thread and its result is dropped (the same holds after a timeout).
    Client-side tools are not run here (``ValueError``), nor are approvals asked: the caller routes
    those calls first (a call to one whose input is not JSON gets its error result here).
    """
    registry = tools_by_name(tools)
    calls = list(calls)
    for call in calls:
        known = registry.get(call.name)
        if known is not None and known.client_side and not call.error:
            raise ValueError(f"Tool {call.name!r} is client-side: the browser runs it, not run_tools().")
    limit = stream_settings.TOOL_TIMEOUT if timeout is None else timeout
    return list(await asyncio.gather(*(_run_one(call, registry, limit, request) for call in calls)))


def run_tools_sync(
    calls: Iterable[ToolCall],
    tools: Iterable[Tool] | Mapping[str, Tool],
    *,
    timeout: float | None = None,
    request: HttpRequest | None = None,
) -> list[ToolRun]:
    """:func:`run_tools` for sync code (WSGI): blocks until every call has a result. Sync tools still
    run concurrently on the tool pool, async ones on an event loop of their own. Nothing can interrupt
    it once started (a WSGI server learns of a disconnect only when it next writes): the timeout bounds it."""
    return async_to_sync(run_tools)(calls, tools, timeout=timeout, request=request)


async def _run_one(
    call: ToolCall, registry: Mapping[str, Tool], timeout: float | None, request: HttpRequest | None
) -> ToolRun:
    found = registry.get(call.name)
    if found is None:
        offered = ", ".join(sorted(registry)) or "none"
        return _invalid(call, f"There is no tool named {call.name!r} (tools offered: {offered}).")
    if call.error:
        return _invalid(call, call.error)
    try:
        arguments = found.validate_input(call.input)
    except ToolInputError as err:
        return _invalid(call, str(err))
    started = time.monotonic()
    task = asyncio.ensure_future(_execute(found, arguments, request))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise
    duration = time.monotonic() - started
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        logger.warning("Tool %r (call %s) did not finish within %s s", call.name, call.id, timeout)
        return _failed(call, f"The tool {call.name!r} did not finish within {timeout:g} seconds.", duration, "timeout")
    try:
        output = task.result()
    except ToolError as err:
        logger.warning("Tool %r (call %s) reported an error: %s", call.name, call.id, err)
        return _failed(call, str(err) or f"The tool {call.name!r} failed.", duration)
    except Exception:
        logger.exception("Tool %r (call %s) raised", call.name, call.id)
        return _failed(call, f"The tool {call.name!r} failed with an internal error.", duration)
    try:
        jsonable = _capped_output(to_jsonable_python(output))
    except (PydanticSerializationError, TypeError, ValueError, RecursionError):
        logger.error("Tool %r (call %s) returned a %s, which is not JSON", call.name, call.id, type(output).__name__)
        return _failed(call, f"The tool {call.name!r} returned a value that cannot be sent.", duration)
    problem = unstorable(jsonable)
    if problem:
        logger.error("Tool %r (call %s) returned %s, which cannot be sent", call.name, call.id, problem)
        return _failed(call, f"The tool {call.name!r} returned a value that cannot be sent ({problem}).", duration)
    return ToolRun(call, ToolResult(call.id, call.name, output=jsonable), duration, "success")


async def _execute(found: Tool, arguments: Any, request: HttpRequest | None) -> Any:
    if found.is_async:
        result = await found.invoke(arguments, request)
    else:
        context = contextvars.copy_context()
        call = functools.partial(context.run, _sync_call, found, arguments, request)
        result = await asyncio.get_running_loop().run_in_executor(_tool_pool.get(), call)
    if inspect.isawaitable(result):  # a sync callable that returned a coroutine
        result = await result
    return result


def _sync_call(found: Tool, arguments: Any, request: HttpRequest | None) -> Any:
    # A pool thread is no request thread: nothing else closes the connections a tool opens here.
    close_old_connections()
    try:
        return found.invoke(arguments, request)
    finally:
        close_old_connections()


def _consume(task: asyncio.Future[Any]) -> None:
    """Collect an abandoned tool's outcome so asyncio does not log "exception was never retrieved"."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("An abandoned tool call ended with %r", task.exception())


def _invalid(call: ToolCall, message: str) -> ToolRun:
    return ToolRun(call, ToolResult(call.id, call.name, error=_capped_text(message)), 0.0, "invalid")


def _failed(call: ToolCall, message: str, duration: float, status: Literal["error", "timeout"] = "error") -> ToolRun:
    return ToolRun(call, ToolResult(call.id, call.name, error=_capped_text(message)), duration, status)


def _capped_text(text: str) -> str:
    limit = stream_settings.TOOL_RESULT_MAX_CHARS
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated: {len(text)} characters, the limit is {limit}]"


def _capped_output(output: Any) -> Any:
    """The output as is, or, when its JSON is longer than ``TOOL_RESULT_MAX_CHARS``, that JSON cut to the
    limit as text, with a note saying so (the model learns it saw only part)."""
    output = _without_lone_surrogates(output)
    limit = stream_settings.TOOL_RESULT_MAX_CHARS
    if limit is None:
        return output
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return output if len(text) <= limit else _capped_text(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """Half an emoji cannot be encoded as UTF-8, so a request body carrying it cannot be sent: pairs
    are joined, and a lone half becomes U+FFFD (strings at any depth)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return value
    if isinstance(value, dict):
        return {_without_lone_surrogates(key): _without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_lone_surrogates(item) for item in value]
    return value


def denied_result(call: ToolCall, reason: str = "") -> ToolResult:
    """What the model is told when the user denied a call."""
    message = "The user denied this tool call." + (f" Reason: {reason}" if reason else "")
    return ToolResult(call.id, call.name, error=_capped_text(message))


_MISSING: Any = object()


def client_tool_result(tool: Tool, call_id: str, *, output: Any = _MISSING, error: str | None = None) -> ToolResult:
    """A client-side tool's result as the browser posted it: ``output`` (checked against the tool's
    ``output_schema``: :class:`ToolOutputError`) or ``error`` text; capped like any result. Verify the
    call first (:func:`verify_call`)."""
    if error is not None:
        return ToolResult(call_id, tool.name, error=_capped_text(str(error) or f"The tool {tool.name!r} failed."))
    if output is _MISSING:
        raise ToolOutputError(f"No output for tool {tool.name!r}.")
    tool.validate_output(output)
    return ToolResult(call_id, tool.name, output=_capped_output(output))


# -- request shapes ------------------------------------------------------------------------------------


def _choice(tools: Sequence[Tool], tool_choice: ToolChoice) -> str | None:
    """``None`` for ``"auto"`` (the default, so left out: some models refuse any ``toolChoice``)."""
    if tool_choice in ("auto", "any"):
        return None if tool_choice == "auto" else "any"
    if tool_choice not in {item.name for item in tools}:
        raise ValueError(f"tool_choice must be 'auto', 'any' or the name of an offered tool, not {tool_choice!r}.")
    return tool_choice


def converse_request_tools(tools: Sequence[Tool], tool_choice: ToolChoice = "auto") -> dict[str, Any]:
    """The Converse request's ``toolConfig`` (to merge into its parameters); ``{}`` without tools.

    Bedrock refuses toolUse/toolResult blocks in the messages of a request without ``toolConfig``:
    keep declaring the tools on every turn of a conversation that used them."""
    if not tools:
        return {}
    specs = []
    for item in tools:
        spec: dict[str, Any] = {"name": item.name, "inputSchema": {"json": item.input_schema}}
        if item.description:
            spec["description"] = item.description
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    choice = _choice(tools, tool_choice)
    if choice is not None:
        config["toolChoice"] = {"any": {}} if choice == "any" else {"tool": {"name": choice}}
    return {"toolConfig": config}


def nova_request_tools(tools: Sequence[Tool], tool_choice: ToolChoice = "auto") -> dict[str, Any]:
    """Amazon Nova's native invoke body takes Converse's ``toolConfig`` unchanged."""
    return converse_request_tools(tools, tool_choice)


def anthropic_request_tools(tools: Sequence[Tool], tool_choice: ToolChoice = "auto") -> dict[str, Any]:
    """The Anthropic Messages body's ``tools`` and ``tool_choice``; ``{}`` without tools."""
    if not tools:
        return {}
    declared = []
    for item in tools:
        spec: dict[str, Any] = {"name": item.name}
        if item.description:
            spec["description"] = item.description
        spec["input_schema"] = item.input_schema
        declared.append(spec)
    fields: dict[str, Any] = {"tools": declared}
    choice = _choice(tools, tool_choice)
    if choice is not None:
        fields["tool_choice"] = {"type": "any"} if choice == "any" else {"type": "tool", "name": choice}
    return fields


def _call_input(call: ToolCall) -> dict[str, Any]:
    """What the model sent, for the replayed assistant turn: an object, or ``{}`` when it was not one
    (Bedrock accepts only an object there; the error result tells the model what was wrong)."""
    return dict(call.input) if isinstance(call.input, Mapping) and not call.error else {}


def _result_text(result: ToolResult) -> str:
    if result.error:
        return result.error
    output = result.output
    return output if isinstance(output, str) and output else json.dumps(output, ensure_ascii=False)


def converse_call_blocks(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The assistant turn's ``toolUse`` blocks for a model turn's calls (Converse and Nova)."""
    return [{"toolUse": {"toolUseId": call.id, "name": call.name, "input": _call_input(call)}} for call in calls]


def converse_result_blocks(
    results: Sequence[ToolResult], *, content: Literal["text", "json"] = "text", status: bool = True
) -> list[dict[str, Any]]:
    """The next user turn's ``toolResult`` blocks (Converse and Nova).

    ``content="text"`` (the default, accepted by every model) sends the output as text (JSON text unless
    it is a string); ``"json"`` sends ``{"json": ...}`` (an object as is, anything else as
    ``{"result": ...}``), which some models (Mistral) prefer. ``status=False`` leaves out the
    success/error status for the few models that refuse it (Writer Palmyra); the error text stays."""
    blocks = []
    for result in results:
        if result.error or content == "text":
            items: list[dict[str, Any]] = [{"text": _result_text(result)}]
        else:
            data = result.output if isinstance(result.output, Mapping) else {"result": result.output}
            items = [{"json": data}]
        block: dict[str, Any] = {"toolUseId": result.id, "content": items}
        if status:
            block["status"] = "error" if result.error else "success"
        blocks.append({"toolResult": block})
    return blocks


def anthropic_call_blocks(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The assistant turn's ``tool_use`` blocks (Anthropic Messages)."""
    return [{"type": "tool_use", "id": call.id, "name": call.name, "input": _call_input(call)} for call in calls]


def anthropic_result_blocks(results: Sequence[ToolResult]) -> list[dict[str, Any]]:
    """The next user turn's ``tool_result`` blocks (Anthropic Messages); errors carry ``is_error``."""
    blocks = []
    for result in results:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.id, "content": _result_text(result)}
        if result.error:
            block["is_error"] = True
        blocks.append(block)
    return blocks


@dataclass(frozen=True)
class ToolFormat:
    """One family's tool shapes: the request fragment declaring the tools, the assistant turn's call
    blocks and the next user turn's result blocks."""

    request: Callable[[Sequence[Tool], ToolChoice], dict[str, Any]]
    call_blocks: Callable[[Sequence[ToolCall]], list[dict[str, Any]]]
    result_blocks: Callable[[Sequence[ToolResult]], list[dict[str, Any]]]


_CONVERSE_FORMAT = ToolFormat(converse_request_tools, converse_call_blocks, converse_result_blocks)

#: The families that can call tools, by family name.
TOOL_FORMATS: Mapping[str, ToolFormat] = MappingProxyType({
    "converse": _CONVERSE_FORMAT,
    "nova": ToolFormat(nova_request_tools, converse_call_blocks, converse_result_blocks),
    "anthropic-messages": ToolFormat(anthropic_request_tools, anthropic_call_blocks, anthropic_result_blocks),
})


# -- stateless verification of client-side calls and approvals -----------------------------------------

_SALT = "django_bedrock_stream.tools"
Purpose = Literal["call", "approval"]


class ToolCallRefused(SuspiciousOperation):
    """A signed tool call or approval that came back does not hold. A ``SuspiciousOperation``: left
    uncaught, Django answers 400 and logs it on ``django.security``."""


class ToolCallForged(ToolCallRefused):
    """Not signed by this site (or signed for another purpose: a call id is no approval)."""


class ToolCallExpired(ToolCallRefused):
    """Signed longer ago than ``BEDROCK_STREAM["TOOL_CALL_MAX_AGE"]`` seconds."""


class ToolCallNotYours(ToolCallRefused):
    """Signed for another user (or session)."""


class ToolCallAltered(ToolCallRefused):
    """The tool name, the input or the call id differs from what was signed."""


def request_binding(request: HttpRequest | None) -> str:
    """Who a signature is bound to: the signed-in user, else the session, else ``"anonymous"`` (then
    any anonymous client without a session may present it). Reads ``request.user``: under ASGI, call it
    where the user is already resolved (as the stream views do before streaming)."""
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    return f"session:{key}" if key else "anonymous"


def _canonical(value: Any) -> Any:
    """The input as the browser will send it back: JavaScript turns ``1.0`` into ``1`` and rounds
    integers beyond 2**53, so both sides are compared in that form."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else _canonical(float(value))
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def _digest(kind: str, value: str) -> str:
    return salted_hmac(f"{_SALT}.{kind}", value, algorithm="sha256").hexdigest()[:32]


def _input_digest(name: str, input: Any) -> str:
    try:
        text = json.dumps(_canonical(input), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(input)  # not JSON: it can only match the very same (unsendable) value
    return _digest("input", f"{name}\x00{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}")


def sign_call(
    call: ToolCall, request: HttpRequest | None = None, *, purpose: Purpose = "call", binding: str | None = None
) -> str:
    """A token for ``call`` (its id, tool name and input) bound to the request's user or session (or an
    explicit ``binding``): send it to the browser as the tool call id (``purpose="call"``) or the approval
    id (``purpose="approval"``), and check what comes back with :func:`verify_call`. The token is signed,
    not encrypted: it shows the call id and tool name, and only keyed digests of the input and the user."""
    who = request_binding(request) if binding is None else binding
    payload = {"i": call.id, "n": call.name, "h": _input_digest(call.name, call.input), "u": _digest("user", who)}
    return signing.dumps(payload, salt=f"{_SALT}.{purpose}", compress=False)


def verify_call(
    token: str,
    *,
    name: str,
    input: Any,
    request: HttpRequest | None = None,
    purpose: Purpose = "call",
    call_id: str | None = None,
    binding: str | None = None,
    max_age: int | None = _MISSING,
) -> str:
    """Check a token of :func:`sign_call` against what the browser posted with it (the tool's name, the
    call's input and, when known, the call id) and the request's user; return the model's call id.

    Raises :class:`ToolCallForged`, :class:`ToolCallExpired` (``max_age`` seconds, default
    ``BEDROCK_STREAM["TOOL_CALL_MAX_AGE"]``), :class:`ToolCallNotYours` or :class:`ToolCallAltered`.
    A valid token can be presented again by the same user: a client that re-sends an approval runs the
    call again, as it would by asking the model again."""
    age = stream_settings.TOOL_CALL_MAX_AGE if max_age is _MISSING else max_age
    if not isinstance(token, str):
        raise ToolCallForged("The tool call signature is missing.")
    try:
        payload = signing.loads(token, salt=f"{_SALT}.{purpose}", max_age=age)
    except signing.SignatureExpired as err:
        raise ToolCallExpired("The tool call signature has expired.") from err
    except (signing.BadSignature, ValueError) as err:
        raise ToolCallForged("The tool call signature is not valid.") from err
    if not isinstance(payload, dict) or not all(isinstance(payload.get(key), str) for key in "inhu"):
        raise ToolCallForged("The tool call signature is not valid.")
    who = request_binding(request) if binding is None else binding
    if not constant_time_compare(payload["u"], _digest("user", who)):
        raise ToolCallNotYours("The tool call was made for another user.")
    if (
        payload["n"] != name
        or not constant_time_compare(payload["h"], _input_digest(name, input))
        or (call_id is not None and payload["i"] != call_id)
    ):
        raise ToolCallAltered("The tool call differs from the one the model made.")
    call = payload["i"]
    assert isinstance(call, str)
    return call
