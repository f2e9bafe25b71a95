"""What a stream cost: its usage times ``BEDROCK_STREAM["PRICES"]``. No I/O, no model, no guessing.

Prices are per 1,000 tokens in ``BEDROCK_STREAM["PRICE_CURRENCY"]`` (a label, ``"USD"`` by default),
as strings or Decimals (never floats: ``0.1`` is not exact), and the arithmetic is Decimal
throughout, so a cost is exact to :data:`COST_PLACES`::

    BEDROCK_STREAM = {
        "PRICES": {
            "anthropic.claude-3-haiku-20240307-v1:0": {"input": "0.00025", "output": "0.00125",
                                                       "cache_read": "0.00003", "cache_write": "0.0003"},
            # an application inference profile's ARN names no model: say which one it stands for
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6":
                "anthropic.claude-3-haiku-20240307-v1:0",
        },
        "PRICE_SURCHARGES": {"global.": "0.10"},  # +10 % through global. profiles
    }

How a model id finds its price (:meth:`PriceTable.price_for`):

1. the id as written, when the table lists it: a profile id or an ARN may have a price of its own
   (taken as it is, no surcharge), or a string naming the model it stands for, which is then looked
   up by these rules (once: a name pointing to another name is refused by check E003);
2. else its base model (:func:`~.modelids.base_model_id`: ``us.``/``eu.``/``apac.``/``global.``
   profile ids, foundation-model and inference-profile ARNs), raised by the surcharge of its
   profile prefix in ``PRICE_SURCHARGES``, if any.

Anything else is unpriced: :func:`price_for` and :func:`cost_of` return ``None``, and the row's
``cost`` stays empty. So does the cost of a usage with cache reads (or writes) when the model's
price has no ``cache_read`` (``cache_write``) rate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from .modelids import base_model_id

logger = logging.getLogger("django_bedrock_stream")

#: Places a cost is rounded to (half up), as ``Completion.cost`` stores it: well below a micro-cent.
COST_PLACES = Decimal("1e-10")
#: The rates of one price entry; ``input`` and ``output`` are required.
RATES = ("input", "output", "cache_read", "cache_write")
#: The usage count each rate applies to (the keys of a stream's ``usage``).
USAGE_KEYS = {"input": "input_tokens", "output": "output_tokens",
              "cache_read": "cache_read_tokens", "cache_write": "cache_write_tokens"}


class PriceTableError(ValueError):
    """``PRICES`` or ``PRICE_SURCHARGES`` has the wrong shape (reported by check E003)."""


@dataclass(frozen=True)
class Price:
    """What 1,000 tokens of each kind cost (a surcharge already included); ``None``: no rate given."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def cost(self, usage: Mapping[str, Any]) -> Decimal | None:
        """The cost of ``usage`` (``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
        ``cache_write_tokens``; missing or None counts as 0), or None when it has tokens of a kind
        this price has no rate for."""
        with localcontext() as context:
            context.prec = 50  # exact for any token count times any sane rate
            total = Decimal(0)
            for rate_name, usage_key in USAGE_KEYS.items():
                tokens = int(usage.get(usage_key) or 0)
                if not tokens:
                    continue
                rate = getattr(self, rate_name)
                if rate is None:
                    return None
                total += tokens * rate
            return (total / 1000).quantize(COST_PLACES, rounding=ROUND_HALF_UP)


def _amount(value: Any, what: str) -> Decimal:
    """A non-negative finite Decimal from a string, Decimal or int; PriceTableError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, Decimal, int)):
        hint = f" (write it as a string, {str(value)!r}: a float is not exact)" if isinstance(value, float) else ""
        raise PriceTableError(f"{what} must be a string or Decimal such as '0.25', not {value!r}{hint}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise PriceTableError(f"{what} is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{what} must be a finite number >= 0, not {value!r}")
    return amount


def parse_price(model: str, value: Any) -> Price:
    """One entry of ``PRICES``: ``{"input": ..., "output": ..., "cache_read": ..., "cache_write": ...}``."""
    if not isinstance(value, Mapping):
        raise PriceTableError(f"the price of {model!r} must be a dict of rates or a model id string, "
                              f"not {type(value).__name__}")
    unknown = sorted(set(value) - set(RATES), key=str)
    if unknown:
        raise PriceTableError(f"the price of {model!r} has unknown rates {unknown} (rates: {', '.join(RATES)})")
    missing = [rate for rate in ("input", "output") if rate not in value]
    if missing:
        raise PriceTableError(f"the price of {model!r} lacks {' and '.join(missing)}")
    rates = {rate: _amount(value[rate], f"the {rate!r} rate of {model!r}")
             for rate in RATES if value.get(rate) is not None}
    return Price(**rates)


def parse_surcharges(value: Any) -> dict[str, Decimal]:
    """``PRICE_SURCHARGES``: profile prefix (``"global."``; the dot may be left out) -> fraction added."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PriceTableError(f"must be a dict of profile prefix -> fraction, not {type(value).__name__}")
    surcharges = {}
    for prefix, fraction in value.items():
        if not isinstance(prefix, str) or not prefix.strip("."):
            raise PriceTableError(f"a prefix must be a non-empty string such as 'global.', not {prefix!r}")
        surcharges[prefix.strip(".") + "."] = _amount(fraction, f"the surcharge of {prefix!r}")
    return surcharges


class PriceTable:
    """``PRICES`` and ``PRICE_SURCHARGES``, checked and parsed once."""

    def __init__(self, prices: Any, surcharges: Any = None) -> None:
        if not isinstance(prices, Mapping):
            raise PriceTableError(f"must be a dict of model id -> price, not {type(prices).__name__}")
        self.surcharges = parse_surcharges(surcharges)
        self.prices: dict[str, Price] = {}
        self.aliases: dict[str, str] = {}
        for model, value in prices.items():
            if not isinstance(model, str) or not model:
                raise PriceTableError(f"a model id must be a non-empty string, not {model!r}")
            if isinstance(value, str):
                if not value:
                    raise PriceTableError(f"{model!r} must name a model id, not ''")
                self.aliases[model] = value
            else:
                self.prices[model] = parse_price(model, value)
        for model, target in self.aliases.items():
            if target in self.aliases:
                raise PriceTableError(f"{model!r} names {target!r}, which names another model in turn")
            if self._lookup(target) is None:
                raise PriceTableError(f"{model!r} names {target!r}, which has no price in the table")

    def price_for(self, model_id: str) -> Price | None:
        """The price of ``model_id`` by the module's rules, or None when the table does not price it."""
        return self._lookup(self.aliases.get(model_id, model_id))

    def _lookup(self, model_id: str) -> Price | None:
        if model_id in self.prices:
            return self.prices[model_id]
        base = base_model_id(model_id)
        price = self.prices.get(base)
        last = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
        fraction = self.surcharges.get(last[: -len(base)]) if price is not None and last != base else None
        if price is None or not fraction:
            return price
        factor = 1 + fraction
        return Price(price.input * factor, price.output * factor,
                     None if price.cache_read is None else price.cache_read * factor,
                     None if price.cache_write is None else price.cache_write * factor)


_configured: dict[str, PriceTable | None] = {}


def configured_table() -> PriceTable | None:
    """The table of the settings (parsed once per settings change), or None: none configured, or
    one E003 refuses (logged once; costs then stay empty rather than wrong)."""
    if "table" not in _configured:
        from .conf import stream_settings

        table = None
        if stream_settings.PRICES is not None:
            try:
                table = PriceTable(stream_settings.PRICES, stream_settings.PRICE_SURCHARGES)
            except PriceTableError as err:
                logger.error("BEDROCK_STREAM's price table is invalid, costs are left empty: %s", err)
        _configured["table"] = table
    return _configured["table"]


def reset() -> None:
    """Forget the parsed table (the settings changed)."""
    _configured.clear()


def price_for(model_id: str) -> Price | None:
    """The configured price of ``model_id`` (a model id, profile id or ARN), or None when unknown."""
    table = configured_table()
    return None if table is None else table.price_for(model_id)


def cost_of(model_id: str, usage: Mapping[str, Any]) -> Decimal | None:
    """What ``usage`` of ``model_id`` cost in ``PRICE_CURRENCY``, or None when it is not known."""
    price = price_for(model_id)
    return None if price is None else price.cost(usage)


def format_cost(amount: Decimal) -> str:
    """``amount`` without trailing zeros but with at least cents: ``1.50``, ``0.000035``."""
    whole, _, fraction = f"{amount.quantize(COST_PLACES):f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
