"""The demo's tools, offered by the chat page's ``converse-tools`` endpoint (:class:`.views.ToolsChatView`).

* :func:`calculator` runs on the server, between two model turns of the same stream.
* :data:`local_time` has no ``execute``: the browser runs it (only it knows the user's clock and time
  zone; ``static/example/chat.js``) and posts the conversation back with its output.
* :func:`send_email` runs on the server once the user approves the call in the page (it sends nothing:
  a demo of an action with consequences).
"""

from __future__ import annotations

import ast
import logging
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from django_bedrock_stream.tools import Tool, ToolError, tool

logger = logging.getLogger("example_project.tools")

#: Longest expression the calculator reads, and the largest integer it makes (in bits): enough for any
#: sum a person asks for, small enough that no input costs more than microseconds.
MAX_EXPRESSION_CHARS = 200
MAX_INT_BITS = 4096

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, ``+ - * / // % **`` and parentheses.

    Parsed with :mod:`ast` and walked over a whitelist of node types (never ``eval``): names,
    calls, attributes, strings and everything else are refused with a :class:`ToolError` the model
    reads, as are results too large to be useful (``9**9**9``) and division by zero.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"Not an arithmetic expression: {expression!r}.") from None
    return _value(tree.body)


def _value(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("Division by zero.") from None
        except OverflowError:
            raise ToolError("The result is too large.") from None
    raise ToolError(f"Only numbers, + - * / // % ** and parentheses are allowed, not {ast.unparse(node)!r}.")


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse an integer power whose result would be huge before computing it (a float power
    overflows at once instead)."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:  # the result has at least this many bits
            raise ToolError("The result is too large.")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ToolError("The result is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("The result is too large.")
    return value


@tool
def calculator(expression: Annotated[str, Field(max_length=MAX_EXPRESSION_CHARS)]) -> int | float:
    """Evaluate an arithmetic expression exactly; use it for any computation.

    Args:
        expression: Numbers with + - * / // % ** and parentheses, like "(17 + 25) * 3".
    """
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # 84 / 2 is 42, not 42.0
    return value


#: Runs in the browser (no ``execute``): the page answers with ``new Date()`` and its time zone.
local_time = Tool(
    "local_time",
    "The user's current local date, time and time zone, read from their browser.",
    {"type": "object", "properties": {}, "additionalProperties": False},
    output_schema={
        "type": "object",
        "properties": {
            "localTime": {"type": "string", "maxLength": 200},
            "timeZone": {"type": "string", "maxLength": 100},
            "utcOffsetMinutes": {"type": "integer", "minimum": -1440, "maximum": 1440},
        },
        "required": ["localTime", "timeZone", "utcOffsetMinutes"],
        "additionalProperties": False,
    },
)


@tool(needs_approval=True)
def send_email(
    to: Annotated[str, Field(max_length=200)],
    subject: Annotated[str, Field(max_length=200)],
    body: Annotated[str, Field(max_length=2000)],
) -> dict[str, Any]:
    """Send an email on the user's behalf. The user approves or denies each email first.

    Args:
        to: The recipient's email address.
        subject: The subject line.
        body: The message.
    """
    # A demo: nothing leaves the server. A real tool would hand the message to the mail system here.
    logger.info("Demo send_email approved: to=%r subject=%r (nothing was sent)", to, subject)
    return {"status": "sent", "to": to, "subject": subject, "note": "Demo only: no email left the server."}


#: What the chat page's tools endpoint offers, in this order.
DEMO_TOOLS: list[Tool] = [calculator, local_time, send_email]
