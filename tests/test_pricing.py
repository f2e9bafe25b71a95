"""Cost per completion: the price table, its resolution of profiles and ARNs, the system checks, and
the cost each stream's row gets through the views (completed, failed, cancelled)."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from django_bedrock_stream import checks, pricing, receivers, streams
from django_bedrock_stream.families import FAMILIES
from django_bedrock_stream.models import Completion
from django_bedrock_stream.pricing import PriceTable, PriceTableError, cost_of, price_for
from tests.recorded import FAMILY_OF, RECORDED_DIR, boto3_events, expected_usage, load_index
from tests.test_reliability import close_server_connections

NOVA_MICRO = "amazon.nova-micro-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"  # the Converse endpoint's default model
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"

#: USD per 1,000 tokens (as the README's example).
PRICES: dict[str, Any] = {
    NOVA_MICRO: {"input": "0.000035", "output": "0.00014", "cache_read": "0.00000875"},
    SONNET_4: {"input": "0.003", "output": "0.015", "cache_read": "0.0003", "cache_write": "0.00375"},
    HAIKU_3: {"input": Decimal("0.00025"), "output": Decimal("0.00125")},
    APP_PROFILE: f"global.{SONNET_4}",
}
PRICED = {"PRICES": PRICES, "PRICE_SURCHARGES": {"global.": "0.10"}}

INDEX = {entry["file"]: entry for entry in load_index()}
needs_captures = pytest.mark.skipif(not INDEX, reason=f"recorded Bedrock captures not found at {RECORDED_DIR}")


def capture_usage(name: str) -> tuple[str, dict[str, int]]:
    """The model id and the usage our parser reads from a recorded capture (as Bedrock sent it)."""
    entry = INDEX[name]
    stream = streams.BedrockStream(boto3_events(RECORDED_DIR / name), FAMILY_OF[entry["payload_family"]]().parse_event)
    "".join(stream)
    assert stream.usage == expected_usage(entry)
    return entry["model_id"], stream.usage


# -- the cost of recorded usage, by hand ---------------------------------------------------------


@needs_captures
@override_settings(BEDROCK_STREAM=PRICED)
def test_cost_of_a_capture_for_a_plain_model_id() -> None:
    model, usage = capture_usage("converse_nova_micro_two_tool_uses.eventstream")
    assert (model, usage["input_tokens"], usage["output_tokens"]) == (NOVA_MICRO, 415, 202)
    # 415 * 0.000035 + 202 * 0.00014 = 0.014525 + 0.02828 = 0.042805 per 1,000 -> 0.000042805
    assert cost_of(model, usage) == Decimal("0.000042805")


@needs_captures
@override_settings(BEDROCK_STREAM=PRICED)
def test_cost_of_a_capture_through_a_us_profile_is_the_base_models() -> None:
    model, usage = capture_usage("converse_claude_sonnet4_thinking.eventstream")
    assert (model, usage["input_tokens"], usage["output_tokens"]) == (f"us.{SONNET_4}", 36, 73)
    # 36 * 0.003 + 73 * 0.015 = 0.108 + 1.095 = 1.203 per 1,000 -> 0.001203 (no surcharge on us.)
    assert cost_of(model, usage) == Decimal("0.001203")
    # The same usage through a global. profile (or the application profile mapped to one): +10 %.
    assert cost_of(f"global.{SONNET_4}", usage) == cost_of(APP_PROFILE, usage) == Decimal("0.0013233")
    # A foundation-model ARN and an inference-profile ARN resolve as their ids do.
    assert cost_of(f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_4}", usage) == Decimal("0.001203")
    assert cost_of(f"arn:aws:bedrock:us-east-1:1:inference-profile/global.{SONNET_4}", usage) == Decimal("0.0013233")


@needs_captures
@override_settings(BEDROCK_STREAM=PRICED)
def test_cost_of_a_capture_with_cache_counts() -> None:
    # Nova's invoke capture reports its cache reads and writes (none, this time) beside the counts.
    model, usage = capture_usage("invoke_nova_micro_tool_use.eventstream")
    assert usage == {"input_tokens": 427, "output_tokens": 156, "cache_read_tokens": 0, "cache_write_tokens": 0}
    # 427 * 0.000035 + 156 * 0.00014 = 0.014945 + 0.02184 = 0.036785 per 1,000
    assert cost_of(model, usage) == Decimal("0.000036785")
    # No capture has non-zero cache counts: the same usage with reads and writes, each at its rate.
    cached = {**usage, "cache_read_tokens": 2000, "cache_write_tokens": 400}
    # Nova's price has no cache_write rate: unknown, not a guess.
    assert cost_of(model, cached) is None
    assert cost_of(model, {**cached, "cache_write_tokens": 0}) == Decimal("0.000054285")  # + 2000 * 0.00000875
    # 427 * 0.003 + 156 * 0.015 + 2000 * 0.0003 + 400 * 0.00375 = 1.281 + 2.34 + 0.6 + 1.5 = 5.721
    assert cost_of(f"us.{SONNET_4}", cached) == Decimal("0.005721")


# -- resolution and the table's shape --------------------------------------------------------------


def test_no_table_means_no_cost() -> None:
    assert pricing.configured_table() is None
    assert price_for(SONNET_4) is None
    assert cost_of(SONNET_4, {"input_tokens": 10, "output_tokens": 10}) is None


@override_settings(BEDROCK_STREAM=PRICED)
def test_unknown_models_are_never_guessed() -> None:
    usage = {"input_tokens": 10, "output_tokens": 10}
    assert cost_of("anthropic.claude-3-5-haiku-20241022-v1:0", usage) is None  # a neighbour is not a price
    assert cost_of(APP_PROFILE.replace("a1b2", "ffff"), usage) is None  # an application profile nobody mapped
    assert cost_of(HAIKU_3, {**usage, "cache_read_tokens": 5}) is None  # no cache_read rate
    assert cost_of(HAIKU_3, {"input_tokens": 0, "output_tokens": 0}) == Decimal(0)


def test_a_profile_listed_as_is_keeps_its_own_price() -> None:
    table = PriceTable({SONNET_4: {"input": "3", "output": "15"}, f"global.{SONNET_4}": {"input": "1", "output": "1"}},
                       {"global.": "0.5"})
    assert table.price_for(f"global.{SONNET_4}") == pricing.Price(Decimal(1), Decimal(1))
    assert table.price_for(f"eu.{SONNET_4}") == pricing.Price(Decimal(3), Decimal(15))


@pytest.mark.parametrize(
    ("prices", "fragment"),
    [
        ([SONNET_4], "must be a dict"),
        ({SONNET_4: {"input": 0.25, "output": "1"}}, "a float is not exact"),
        ({SONNET_4: {"input": "0.25"}}, "lacks output"),
        ({SONNET_4: {"input": "1", "output": "1", "cached": "1"}}, "unknown rates"),
        ({SONNET_4: {"input": "-1", "output": "1"}}, ">= 0"),
        ({SONNET_4: {"input": "x", "output": "1"}}, "not a number"),
        ({APP_PROFILE: "anthropic.claude-v2"}, "has no price"),
        ({APP_PROFILE: "b", "b": "c", "c": {"input": "1", "output": "1"}}, "names another model"),
    ],
)
def test_e003_refuses_a_bad_price_table(prices: Any, fragment: str) -> None:
    with pytest.raises(PriceTableError, match=fragment):
        PriceTable(prices)
    with override_settings(BEDROCK_STREAM={"PRICES": prices}):
        [error] = checks.check_settings_values()
        assert error.id == "bedrock_stream.E003" and error.obj == "PRICES" and fragment in error.msg
        assert checks.check_prices() == []  # E003 says it; W008 does not pile on
        assert pricing.configured_table() is None  # costs stay empty rather than wrong


@pytest.mark.parametrize(
    ("key", "value"),
    [("PRICE_SURCHARGES", {"global.": "ten"}), ("PRICE_SURCHARGES", ["global."]), ("PRICE_SURCHARGES", {"": "0.1"}),
     ("PRICE_CURRENCY", ""), ("PRICE_CURRENCY", None)],
)
def test_e003_refuses_bad_surcharges_and_currency(key: str, value: Any) -> None:
    with override_settings(BEDROCK_STREAM={key: value}):
        [error] = checks.check_settings_values()
    assert (error.id, error.obj) == ("bedrock_stream.E003", key)


def test_e003_accepts_the_documented_table() -> None:
    with override_settings(BEDROCK_STREAM={**PRICED, "PRICE_CURRENCY": "EUR"}):
        assert checks.check_settings_values() == []


def test_the_readmes_table_checks_clean_and_prices_what_it_says() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", readme.split("\n### Cost\n", 1)[1], maxsplit=1)[0]
    [code] = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    with override_settings(BEDROCK_STREAM=namespace["BEDROCK_STREAM"]):
        assert checks.check_settings_values() == []
        usage = {"input_tokens": 1000, "output_tokens": 1000}
        assert cost_of(SONNET_4, usage) == Decimal("0.018")
        assert cost_of(APP_PROFILE, usage) == Decimal("0.0198")  # through global.: +10 %


# -- W008 ----------------------------------------------------------------------------------------

#: Every model the test URLconf serves: the package's endpoints and the test routes use the defaults.
SERVED_DEFAULTS = {family.default_model_id for family in FAMILIES.values()}


def w008(settings: dict[str, Any]) -> list[Any]:
    with override_settings(BEDROCK_STREAM=settings):
        return [m for m in checks.check_prices() if m.id == "bedrock_stream.W008"]


def test_w008_silent_without_a_table() -> None:
    assert w008({}) == w008({"ALLOWED_MODELS": ["someone.unpriced-v1"]}) == []


def test_w008_silent_when_every_served_model_is_priced() -> None:
    table = {model: {"input": "1", "output": "1"} for model in SERVED_DEFAULTS}
    # A us. profile and a mapped application profile count as priced through their base model.
    assert w008({"PRICES": {**table, APP_PROFILE: HAIKU_3}, "ALLOWED_MODELS": [f"us.{HAIKU_3}", APP_PROFILE]}) == []


def test_w008_names_each_served_model_missing_from_the_table() -> None:
    table = {model: {"input": "1", "output": "1"} for model in SERVED_DEFAULTS - {HAIKU_3}}
    warnings = w008({"PRICES": table, "ALLOWED_MODELS": [APP_PROFILE]})
    assert sorted(w.obj for w in warnings) == sorted([HAIKU_3, APP_PROFILE])
    [haiku] = [w for w in warnings if w.obj == HAIKU_3]
    assert "ConverseStreamView at '/bedrock/converse/'" in haiku.msg and "no cost" in haiku.msg
    [profile] = [w for w in warnings if w.obj == APP_PROFILE]
    assert "BEDROCK_STREAM['ALLOWED_MODELS']" in profile.msg and "arn:" in profile.hint


# -- through the views: the stored row's cost --------------------------------------------------------


def post(path: str, text: str, **extra: Any) -> Any:
    body = json.dumps({"messages": [{"role": "user", "content": text}], **extra})
    return Client().post(path, body, content_type="application/json")


def by_hand(row: Completion, rates: dict[str, str]) -> Decimal:
    """The row's tokens times the rates (per 1,000), to ten places, computed here independently."""
    counts = {"input": row.input_tokens, "output": row.output_tokens,
              "cache_read": row.cache_read_tokens, "cache_write": row.cache_write_tokens}
    total = sum((Decimal(counts[name] or 0) * Decimal(rate) for name, rate in rates.items()), Decimal(0))
    return (total / 1000).quantize(Decimal("1e-10"))


def stored(row_id: int) -> Completion:
    row = Completion.objects.get(pk=row_id)
    assert isinstance(row.cost, Decimal)
    return row


@needs_captures
@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True, "ALLOWED_MODELS": [f"us.{SONNET_4}"]})
def test_a_completed_stream_of_a_recorded_capture_stores_its_cost(bedrock_emulator: Any) -> None:
    bedrock_emulator.set_scenario(replay=str(RECORDED_DIR / "converse_claude_sonnet4_thinking.eventstream"))
    response = post(reverse("django_bedrock_stream:converse"), "x", model=f"us.{SONNET_4}")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    row = stored(Completion.objects.get().pk)
    assert (row.status, row.model_id, row.input_tokens, row.output_tokens) == ("completed", f"us.{SONNET_4}", 36, 73)
    assert row.cost == Decimal("0.001203")


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True, "ALLOWED_MODELS": [f"global.{SONNET_4}"]})
def test_cache_reads_and_writes_are_priced_at_their_rates(bedrock_emulator: Any) -> None:
    response = post(reverse("django_bedrock_stream:converse"), "[[emulator tokens=2 cache_read=120 cache_write=30]] hi",
                    model=f"global.{SONNET_4}")
    b"".join(response.streaming_content)
    row = stored(Completion.objects.get().pk)
    assert (row.output_tokens, row.cache_read_tokens, row.cache_write_tokens) == (2, 120, 30)
    rates = {"input": "0.0033", "output": "0.0165", "cache_read": "0.00033", "cache_write": "0.004125"}  # +10 %
    assert row.cost == by_hand(row, rates) and row.cost > by_hand(row, {"input": "0.0033", "output": "0.0165"})


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True})
def test_a_failed_stream_stores_the_cost_of_its_estimated_usage(bedrock_emulator: Any) -> None:
    response = post(reverse("django_bedrock_stream:converse"),
                    "[[emulator tokens=6 error_at=3 error=modelStreamErrorException]] hi")
    b"".join(response.streaming_content)
    row = stored(Completion.objects.get().pk)
    assert (row.status, row.model_id, row.usage_estimated) == ("failed", HAIKU_3, True)
    assert row.output_tokens and row.cost == by_hand(row, {"input": "0.00025", "output": "0.00125"}) > 0


@pytest.mark.django_db(transaction=True)  # closing the response closes the connection too
@override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True})
def test_a_cancelled_stream_stores_a_cost(bedrock_emulator: Any) -> None:
    response = post(reverse("django_bedrock_stream:converse"), "[[emulator tokens=50 delay_ms=5]] hi")
    next(iter(response.streaming_content))
    response.close()  # the server closes the body: the client went away
    row = stored(Completion.objects.get().pk)
    assert row.status == "cancelled" and row.output_tokens
    assert row.cost == by_hand(row, {"input": "0.00025", "output": "0.00125"}) > 0


@pytest.mark.django_db(transaction=True)
async def test_the_async_path_stores_the_cost_too(bedrock_emulator: Any) -> None:
    with override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True}):
        response = await AsyncClient().post(reverse("django_bedrock_stream:converse"),
                                            json.dumps({"messages": [{"role": "user", "content": "[[emulator tokens=4]] hi"}]}),
                                            content_type="application/json")
        [chunk async for chunk in response.streaming_content]
    row = await sync_to_async(Completion.objects.get)()
    close_server_connections()  # asgiref's thread's, so that PostgreSQL can drop the test database
    assert row.status == "completed" and isinstance(row.cost, Decimal)
    assert row.cost == by_hand(row, {"input": "0.00025", "output": "0.00125"}) > 0


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={**PRICED, "ALLOW_ANONYMOUS": True})
def test_an_unpriced_model_leaves_the_cost_empty(bedrock_emulator: Any) -> None:
    b"".join(post(reverse("django_bedrock_stream:llama3"), "[[emulator tokens=3]] hi").streaming_content)
    row = Completion.objects.get()
    assert row.status == "completed" and row.output_tokens == 3 and row.cost is None


def test_the_unsaved_completion_log_carries_the_cost_as_text() -> None:
    completion = Completion(pk=7, model_id=HAIKU_3, cost=Decimal("0.0000123450"))
    record = json.loads(json.dumps(receivers.completion_record(completion)))
    assert Decimal(record["cost"]) == completion.cost


# -- where the cost shows ---------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"PRICE_CURRENCY": "EUR"})
def test_the_admin_shows_the_cost(admin_client: Client) -> None:
    priced = Completion.objects.create(model_id=HAIKU_3, status="completed", cost=Decimal("0.0012500000"))
    unpriced = Completion.objects.create(model_id="meta.llama3-8b-instruct-v1:0", status="completed")
    changelist = admin_client.get(reverse("admin:django_bedrock_stream_completion_changelist")).content.decode()
    assert "column-cost_column" in changelist and '<td class="field-cost_column">0.00125</td>' in changelist
    detail = admin_client.get(reverse("admin:django_bedrock_stream_completion_change", args=[priced.pk])).content.decode()
    assert "0.00125 EUR" in detail
    detail = admin_client.get(reverse("admin:django_bedrock_stream_completion_change", args=[unpriced.pk])).content.decode()
    assert "unknown" in detail


@pytest.mark.parametrize(("amount", "text"), [("1.5", "1.50"), ("0.0000350000", "0.000035"), ("0", "0.00"),
                                              ("12.3456789012", "12.3456789012")])
def test_format_cost(amount: str, text: str) -> None:
    assert pricing.format_cost(Decimal(amount)) == text


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"PRICE_CURRENCY": "EUR"})
def test_bedrock_usage_cost_columns() -> None:
    for cost in ("0.0012500000", "0.0000300000", None):
        Completion.objects.create(model_id=HAIKU_3, status="completed", input_tokens=1, output_tokens=2,
                                  cost=None if cost is None else Decimal(cost))
    Completion.objects.create(model_id="meta.llama3-8b-instruct-v1:0", status="completed", input_tokens=4, output_tokens=8)

    def usage(*args: str) -> str:
        out = io.StringIO()
        call_command("bedrock_usage", *args, stdout=out)
        return out.getvalue()

    rows = list(csv.reader(io.StringIO(usage("--cost", "--format", "csv"))))
    assert rows[0][-2:] == ["cost_EUR", "unpriced"]
    # The known costs summed, the unpriced one counted apart; a model with no known cost: empty.
    assert {row[0]: row[-2:] for row in rows[1:]} == {HAIKU_3: ["0.00128", "1"], "meta.llama3-8b-instruct-v1:0": ["", "1"]}
    table = usage("--cost").splitlines()
    assert table[0].split()[-2:] == ["cost_EUR", "unpriced"]
    assert table[-1].split() == ["TOTAL", "4", "7", "14", "21", "0", "0", "0.00128", "2"]
    assert table[-3].split()[-2:] == ["-", "1"]
    assert "cost" not in usage().splitlines()[0]  # only with --cost
