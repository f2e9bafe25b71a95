"""System checks: each function called directly under ``override_settings``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import django
import pytest
from django.core import checks as django_checks
from django.core.management import call_command
from django.test import override_settings
from django.urls import include, path
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticatedOrReadOnly

from django_bedrock_stream import checks
from django_bedrock_stream.drf import BedrockStreamAPIView, api_view_for
from django_bedrock_stream.families import FAMILIES as FAMILY_REGISTRY
from django_bedrock_stream.families import ConverseFamily
from django_bedrock_stream.views import ConverseStreamView, Llama2StreamView

FAMILIES = list(FAMILY_REGISTRY)  # every family the package routes


def ids(messages: list[django_checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


# -- registration ------------------------------------------------------------------------------


def test_every_check_is_registered_with_the_app_tag() -> None:
    registered: list[Any] = list(django_checks.registry.registry.get_checks())
    for check, _tags in checks.CHECKS:
        assert check in registered
        assert checks.TAG in getattr(check, "tags", ())


# -- the documented default configurations check clean --------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no test settings, no checkout on the path, no AWS config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    missing = str(tmp_path / "no-such-aws-file")
    return {**env, "AWS_CONFIG_FILE": missing, "AWS_SHARED_CREDENTIALS_FILE": missing, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def readme_setup_blocks() -> dict[str, str]:
    """``{file: code}`` for the python blocks of the README's "Setup" section; each names its file
    on its first line (``# myproject/settings.py``) and is added to that file of a new project."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Setup\n", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for code in re.findall(r"^```python\n(.*?)^```", section, re.S | re.M):
        label = re.match(r"#\s*(\S+\.py)\b", code)
        assert label, f"a Setup block does not name its file:\n{code}"
        blocks[label.group(1)] = code
    return blocks


def test_the_readme_default_setup_checks_clean(tmp_path: Path) -> None:
    """``startproject``, then exactly what "Setup" says: ``manage.py check`` has nothing to say (no
    W003 for the bundled Converse endpoint, no W006 for any view)."""
    blocks = readme_setup_blocks()
    project = next(iter(blocks)).split("/")[0]
    assert set(blocks) == {f"{project}/settings.py", f"{project}/urls.py"}
    env = _isolated_env(tmp_path, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret")  # a user with credentials
    _run(["-m", "django", "startproject", project, str(tmp_path)], tmp_path, env)
    for name, code in blocks.items():
        with open(tmp_path / name, "a", encoding="utf-8") as file:
            file.write("\n" + code)
    assert "System check identified no issues (0 silenced)." in _run(["manage.py", "check"], tmp_path, env)


def test_the_example_project_checks_clean_and_silences_only_its_anonymous_demo(tmp_path: Path) -> None:
    assert "System check identified no issues" in _run(
        ["-m", "django", "check", "--settings=example_project.settings"], REPO, _isolated_env(tmp_path)
    )
    (tmp_path / "unsilenced.py").write_text("from example_project.settings import *\nSILENCED_SYSTEM_CHECKS = []\n")
    out = _run(["-m", "django", "check", "--settings=unsilenced"], REPO, _isolated_env(tmp_path, PYTHONPATH=str(tmp_path)))
    assert set(re.findall(r"\((\w+\.[EW]\d+)\)", out)) == {"bedrock_stream.W006"}, out


def test_manage_py_check_with_the_tag_runs(bedrock_emulator: object) -> None:
    import io

    out = io.StringIO()
    with override_settings(BEDROCK_STREAM={"ALLOWED_MODELS": ["m"]}):
        call_command("check", "--tag", checks.TAG, stdout=out, stderr=out)
    assert "System check identified no issues" in out.getvalue()


# -- E001 / W001 -------------------------------------------------------------------------------


def test_settings_absent_or_valid_is_silent() -> None:
    with override_settings(BEDROCK_STREAM=None):
        assert checks.check_settings_keys() == []
    with override_settings(BEDROCK_STREAM={"MAX_TOKENS": 10}):
        assert checks.check_settings_keys() == []


def test_e001_not_a_dict() -> None:
    with override_settings(BEDROCK_STREAM=["REGION"]):
        assert ids(checks.check_settings_keys()) == ["bedrock_stream.E001"]
        # The other settings checks stay quiet instead of crashing on the bad type.
        assert checks.check_settings_values() == []
        assert checks.check_aiobotocore_installed() == []


def test_w001_unknown_key() -> None:
    with override_settings(BEDROCK_STREAM={"MAX_TOKEN": 10, "REGION": "eu-west-1"}):
        result = checks.check_settings_keys()
    assert ids(result) == ["bedrock_stream.W001"]
    assert "'MAX_TOKEN'" in result[0].msg
    assert "MAX_TOKENS" in (result[0].hint or "")


# -- E003 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_TOKENS", 0),
        ("MAX_TOKENS", -5),
        ("MAX_TOKENS", "1024"),
        ("MAX_TOKENS", True),
        ("MAX_TOKENS", 10.5),
        ("THREAD_POOL_SIZE", 0),
        ("MAX_MESSAGES", None),
        ("ASYNC_TRANSPORT", "trio"),
        ("ASYNC_TRANSPORT", None),
        ("CLIENT_CONFIG", ["read_timeout", 300]),
        ("CLIENT_CONFIG", {"read_timout": 300}),
        ("CLIENT_CONFIG", {"retries": {"mode": "bogus"}}),
        ("ALLOWED_MODELS", "anthropic.claude-v2"),
        ("ALLOWED_MODELS", ["ok", 3]),
        ("REGION", ""),
        ("PERSIST", "yes"),
    ],
)
def test_e003_invalid_value(key: str, value: object) -> None:
    with override_settings(BEDROCK_STREAM={key: value}):
        result = checks.check_settings_values()
    assert ids(result) == ["bedrock_stream.E003"]
    assert key in result[0].msg
    assert result[0].obj == key


@pytest.mark.parametrize(
    "values",
    [
        {"MAX_TOKENS": 1, "THREAD_POOL_SIZE": 8},
        {"ASYNC_TRANSPORT": "thread"},
        {"ASYNC_TRANSPORT": "auto"},
        {"CLIENT_CONFIG": {"read_timeout": 900, "retries": {"mode": "adaptive", "max_attempts": 5}}},
        {"CLIENT_CONFIG": None},
        {"ALLOWED_MODELS": ("a", "b"), "REGION": None, "ENDPOINT_URL": "http://127.0.0.1:9"},
    ],
)
def test_e003_valid_values_pass(values: dict[str, object]) -> None:
    with override_settings(BEDROCK_STREAM=values):
        assert checks.check_settings_values() == []


def test_e003_reports_each_bad_key() -> None:
    with override_settings(BEDROCK_STREAM={"MAX_TOKENS": 0, "ASYNC_TRANSPORT": "x"}):
        result = checks.check_settings_values()
    assert [m.obj for m in result] == ["ASYNC_TRANSPORT", "MAX_TOKENS"]


def test_e003_client_config_message_names_botocore_reason() -> None:
    with override_settings(BEDROCK_STREAM={"CLIENT_CONFIG": {"read_timout": 1}}):
        (error,) = checks.check_settings_values()
    assert "botocore.config.Config" in error.msg
    assert "read_timout" in error.msg


# -- E002 --------------------------------------------------------------------------------------


def test_e002_aiobotocore_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore", None)  # makes `import aiobotocore` raise ImportError
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}):
        result = checks.check_aiobotocore_installed()
    assert ids(result) == ["bedrock_stream.E002"]
    assert "django-bedrock-stream[async]" in (result[0].hint or "")
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "auto"}):
        assert checks.check_aiobotocore_installed() == []


def test_e002_silent_when_installed() -> None:
    pytest.importorskip("aiobotocore")
    with override_settings(BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}):
        assert checks.check_aiobotocore_installed() == []


# -- W002 --------------------------------------------------------------------------------------

AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "BOTO_CONFIG",
)


@pytest.fixture
def bare_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS configuration at all: empty environment, config files that do not exist."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("BOTO_CONFIG", str(tmp_path / "boto"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # belt and braces: the check never calls IMDS
    return tmp_path


def test_w002_nothing_configured(bare_aws: Path) -> None:
    with override_settings(BEDROCK_STREAM={}):
        result = checks.check_credentials()
    assert ids(result) == ["bedrock_stream.W002"]
    assert "credentials" in result[0].msg and "region" in result[0].msg
    assert "emulator" in (result[0].hint or "")


def test_w002_only_region_missing(bare_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with override_settings(BEDROCK_STREAM={}):
        (warning,) = checks.check_credentials()
    assert "region" in warning.msg and "credentials" not in warning.msg


def test_w002_only_credentials_missing(bare_aws: Path) -> None:
    with override_settings(BEDROCK_STREAM={"REGION": "eu-central-1"}):
        (warning,) = checks.check_credentials()
    assert "credentials" in warning.msg and "region" not in warning.msg


def test_w002_silent_with_env_credentials_and_region(bare_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    with override_settings(BEDROCK_STREAM={}):
        assert checks.check_credentials() == []


def test_w002_silent_with_profile_files(bare_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (bare_aws / "credentials").write_text("[work]\naws_access_key_id = AKID\naws_secret_access_key = s\n")
    (bare_aws / "config").write_text("[profile work]\nregion = eu-west-3\n")
    monkeypatch.setenv("AWS_PROFILE", "work")
    with override_settings(BEDROCK_STREAM={}):
        assert checks.check_credentials() == []


def test_w002_sso_profile_counts_without_network(bare_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (bare_aws / "config").write_text(
        "[profile sso]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\nregion = us-east-1\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "sso")
    with override_settings(BEDROCK_STREAM={}):
        assert checks.check_credentials() == []


def test_w002_unknown_profile(bare_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with override_settings(BEDROCK_STREAM={"REGION": "us-east-1"}):
        (warning,) = checks.check_credentials()
    assert "nope" in warning.msg


@pytest.mark.parametrize("where", ["setting", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"])
def test_w002_silent_with_an_endpoint_override(bare_aws: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    settings_value: dict[str, object] = {}
    if where == "setting":
        settings_value["ENDPOINT_URL"] = "http://127.0.0.1:8765"
    else:
        monkeypatch.setenv(where, "http://127.0.0.1:8765")
    with override_settings(BEDROCK_STREAM=settings_value):
        assert checks.check_credentials() == []


def test_w002_silent_under_the_emulator_fixture(bedrock_emulator: object) -> None:
    assert checks.check_credentials() == []


# -- W007 --------------------------------------------------------------------------------------

API_KEY = "bedrock-api-key-check-never-shown-0123456789"
ENDPOINT_SOURCES = {
    "setting": "BEDROCK_STREAM['ENDPOINT_URL']",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
}
KEY_SOURCES = {"setting": "BEDROCK_STREAM['API_KEY']", "env": "AWS_BEARER_TOKEN_BEDROCK"}


def _w007(monkeypatch: pytest.MonkeyPatch, key: str | None, endpoint: str | None, url: str) -> list[Any]:
    values: dict[str, object] = {}
    if key == "setting":
        values["API_KEY"] = API_KEY
    elif key == "env":
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", API_KEY)
    if endpoint == "setting":
        values["ENDPOINT_URL"] = url
    elif endpoint is not None:
        monkeypatch.setenv(endpoint, url)
    with override_settings(BEDROCK_STREAM=values):
        return checks.check_api_key_endpoint()


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_SOURCES))
@pytest.mark.parametrize("key", sorted(KEY_SOURCES))
@pytest.mark.parametrize("url", ["http://127.0.0.1:8787", " HTTP://localhost:8787/"])
def test_w007_an_api_key_with_a_plain_http_endpoint(
    bare_aws: Path, monkeypatch: pytest.MonkeyPatch, key: str, endpoint: str, url: str
) -> None:
    """botocore 1.44+ would refuse every request ("Bearer authorization requires an HTTPS endpoint",
    a 502 per stream): the check says so up front, naming where the key and the endpoint come from
    and how to serve the emulator over HTTPS, without showing either value."""
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    (warning,) = _w007(monkeypatch, key, endpoint, url)
    assert warning.id == "bedrock_stream.W007"
    assert KEY_SOURCES[key] in warning.msg and ENDPOINT_SOURCES[endpoint] in warning.msg
    assert "plain http://" in warning.msg and "--tls-self-signed" in (warning.hint or "")
    text = warning.msg + (warning.hint or "")
    assert API_KEY not in text and url.strip() not in text


@pytest.mark.parametrize(
    ("key", "endpoint", "url"),
    [
        ("setting", "setting", "https://127.0.0.1:8787"),  # the emulator over TLS
        ("env", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "https://bedrock-runtime.us-east-1.amazonaws.com"),
        ("setting", None, ""),  # no override: Bedrock itself, over HTTPS
        (None, "setting", "http://127.0.0.1:8787"),  # no key: SigV4 (what the emulator accepts by default)
    ],
    ids=["https emulator", "https override", "no override", "no key"],
)
def test_w007_silent_otherwise(
    bare_aws: Path, monkeypatch: pytest.MonkeyPatch, key: str | None, endpoint: str | None, url: str
) -> None:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    assert _w007(monkeypatch, key, endpoint, url) == []


def test_w007_through_manage_py_check(bedrock_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session emulator is plain HTTP (AWS_ENDPOINT_URL_BEDROCK_RUNTIME); an API key makes it W007."""
    import io

    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", API_KEY)
    out = io.StringIO()
    with override_settings(BEDROCK_STREAM={"ALLOWED_MODELS": ["m"]}):
        call_command("check", "--tag", checks.TAG, stdout=out, stderr=out)
    assert "(bedrock_stream.W007)" in out.getvalue() and API_KEY not in out.getvalue()


# -- W003 --------------------------------------------------------------------------------------


_urlconfs = iter(range(1_000_000))


def _with_urls(*patterns: object) -> override_settings:
    """Route ``patterns`` as ROOT_URLCONF (a fresh module each time: resolvers are cached by name)."""
    import types

    name = f"bedrock_check_urls_{next(_urlconfs)}"
    module = types.ModuleType(name)
    module.urlpatterns = list(patterns)  # type: ignore[attr-defined]
    sys.modules[name] = module
    return override_settings(ROOT_URLCONF=name)


def test_w003_spares_the_packages_own_urlconf_but_not_the_projects_routes() -> None:
    # tests.urls includes django_bedrock_stream.urls (ConverseStreamView at bedrock/converse/, serving
    # its documented default model like the other seven) and routes the DRF Converse view itself.
    with override_settings(BEDROCK_STREAM={"ALLOWED_MODELS": []}):
        result = checks.check_converse_models()
    (warning,) = result
    assert warning.id == "bedrock_stream.W003" and "ConverseStreamAPIView at '/api/converse/'" in warning.msg
    assert ConverseStreamView.family_class.default_model_id in warning.msg


def test_w003_flags_the_bundled_view_when_the_project_routes_it() -> None:
    with _with_urls(path("chat/", ConverseStreamView.as_view())):
        with override_settings(BEDROCK_STREAM={}):
            (warning,) = checks.check_converse_models()
    assert "ConverseStreamView at '/chat/'" in warning.msg


def test_routes_know_which_urlconf_routes_them() -> None:
    routes = {route.path: route.urlconf for route in checks._routes()}
    assert routes["bedrock/converse/"] == checks.BUNDLED_URLCONF
    assert routes["api/converse/"] == "tests.urls"
    with _with_urls(path("x/", include([path("c/", ConverseStreamView.as_view())]))):
        from django.conf import settings

        assert {r.path: r.urlconf for r in checks._routes()} == {"x/c/": settings.ROOT_URLCONF}


def test_w003_silent_with_allowed_models_setting() -> None:
    with override_settings(BEDROCK_STREAM={"ALLOWED_MODELS": ["amazon.nova-lite-v1:0"]}):
        assert checks.check_converse_models() == []


def test_w003_silent_when_the_view_pins_a_model() -> None:
    with _with_urls(path("c/", ConverseStreamView.as_view(model_id="amazon.nova-pro-v1:0"))):
        with override_settings(BEDROCK_STREAM={}):
            assert checks.check_converse_models() == []


def test_w003_silent_with_view_allowed_models_and_for_subclasses_with_model() -> None:
    class Pinned(ConverseStreamView):
        model_id = "amazon.nova-micro-v1:0"

    with _with_urls(
        path("a/", ConverseStreamView.as_view(allowed_models=["x"])),
        path("p/", Pinned.as_view()),
    ):
        with override_settings(BEDROCK_STREAM={}):
            assert checks.check_converse_models() == []


def test_w003_nested_include_and_subclass() -> None:
    class MyConverse(ConverseStreamView):
        pass

    inner = [path("chat/", MyConverse.as_view()), path("llama/", Llama2StreamView.as_view())]
    with _with_urls(path("api/", include(inner))):
        with override_settings(BEDROCK_STREAM={}):
            result = checks.check_converse_models()
    assert ids(result) == ["bedrock_stream.W003"]
    assert "MyConverse at '/api/chat/'" in result[0].msg


def test_w003_ignores_non_converse_views() -> None:
    with _with_urls(path("l/", Llama2StreamView.as_view())):
        with override_settings(BEDROCK_STREAM={}):
            assert checks.check_converse_models() == []


def test_w003_broken_urlconf_is_left_to_django() -> None:
    with override_settings(ROOT_URLCONF="does.not.exist"):
        assert checks.check_converse_models() == []


# -- W006 --------------------------------------------------------------------------------------


class PublicConverseAPI(BedrockStreamAPIView):
    family_class = ConverseFamily
    permission_classes = [AllowAny]


class NeedsARealRequest(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        raise AssertionError("no queryset")


def w006(**settings_values: Any) -> dict[str, str]:
    """``{route: message}`` of the W006 warnings under these settings."""
    with override_settings(**settings_values):
        result = checks.check_anonymous_access()
    assert set(ids(result)) <= {"bedrock_stream.W006"}
    return {m.msg.split("'")[1]: m.msg for m in result}


def test_w006_silent_by_default_for_both_flavours() -> None:
    # tests.urls routes the eight plain views, two DRF views and a GET-enabled plain view.
    assert w006(BEDROCK_STREAM={}) == {}


def test_w006_every_stream_route_with_allow_anonymous() -> None:
    warned = w006(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})
    assert set(warned) == {
        *(f"/bedrock/{family}/" for family in FAMILIES), "/bedrock/chat/", "/api/llama2/", "/api/converse/",
        "/get/llama2/",
    }
    assert "ALLOW_ANONYMOUS'] is true and its permission classes (AllowAny)" in warned["/api/converse/"]
    assert "(POST and GET)" in warned["/get/llama2/"] and "(POST)" in warned["/bedrock/llama2/"]


def test_w006_silent_with_allow_anonymous_when_the_project_default_needs_a_user() -> None:
    rest = {"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
    assert w006(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True}, REST_FRAMEWORK=rest) == {}


def test_w006_a_drf_view_with_its_own_allow_any() -> None:
    with _with_urls(
        path("public/", PublicConverseAPI.as_view()),
        path("open/", api_view_for("llama2").as_view(permission_classes=[AllowAny])),
        path("closed/", api_view_for("llama2").as_view()),
        path("plain/", Llama2StreamView.as_view(permission_classes=[AllowAny])),  # IsAuthenticated still first
    ):
        warned = w006(BEDROCK_STREAM={})
    assert set(warned) == {"/public/", "/open/"}
    assert "PublicConverseAPI at '/public/' lets anonymous users stream (POST): its permission classes (AllowAny)" in (
        warned["/public/"]
    )


def test_w006_read_only_permissions_open_get_streams() -> None:
    read_only = [IsAuthenticatedOrReadOnly]
    with _with_urls(
        path("sse/", Llama2StreamView.as_view(allow_get=True, permission_classes=read_only)),
        path("post-only/", Llama2StreamView.as_view(permission_classes=read_only)),
    ):
        warned = w006(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})
    assert list(warned) == ["/sse/"] and "(GET)" in warned["/sse/"]


def test_w006_a_permission_that_needs_a_real_request_counts_as_refusing() -> None:
    with _with_urls(path("x/", api_view_for("llama2").as_view(permission_classes=[NeedsARealRequest]))):
        assert w006(BEDROCK_STREAM={}) == {}


@pytest.mark.django_db
@override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True})
def test_w006_agrees_with_what_the_views_do(bedrock_emulator: object) -> None:
    """Each route W006 names really streams for an anonymous client; each it spares refuses one."""
    from django.test import Client

    rest = {"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
    body = '{"messages": [{"role": "user", "content": "hi"}]}'
    with _with_urls(path("public/", PublicConverseAPI.as_view()), path("closed/", api_view_for("llama2").as_view())):
        warned = w006(REST_FRAMEWORK=rest)
        with override_settings(REST_FRAMEWORK=rest):
            statuses = {url: Client().post(url, body, content_type="application/json").status_code
                        for url in ("/public/", "/closed/")}
    assert set(warned) == {"/public/"} and statuses == {"/public/": 200, "/closed/": 403}


# -- W004 --------------------------------------------------------------------------------------


class MyGZip:
    pass


GZIP_BUFFERS = django.VERSION < (6, 0)  # Django 6.0 flushes the compressor after each part
needs_buffering_gzip = pytest.mark.skipif(not GZIP_BUFFERS, reason="Django >= 6.0's gzip flushes each part")


@needs_buffering_gzip
def test_w004_gzip_middleware() -> None:
    middleware = ["django.middleware.gzip.GZipMiddleware", "django.middleware.common.CommonMiddleware"]
    with override_settings(MIDDLEWARE=middleware):
        result = checks.check_middleware()
    assert ids(result) == ["bedrock_stream.W004"]
    assert result[0].obj == "django.middleware.gzip.GZipMiddleware"
    assert "compress" in result[0].msg


@needs_buffering_gzip
def test_w004_gzip_subclass() -> None:
    from django.middleware.gzip import GZipMiddleware

    module = type(sys)("bedrock_check_mw")
    module.Sub = type("Sub", (GZipMiddleware,), {})  # type: ignore[attr-defined]
    sys.modules["bedrock_check_mw"] = module
    with override_settings(MIDDLEWARE=["bedrock_check_mw.Sub"]):
        (warning,) = checks.check_middleware()
    assert "a subclass of django.middleware.gzip.GZipMiddleware" in warning.msg


@pytest.mark.parametrize(
    "entry",
    [
        "django.middleware.http.ConditionalGetMiddleware",
        "django.middleware.cache.UpdateCacheMiddleware",
        "django.middleware.common.CommonMiddleware",
        "not.importable.Middleware",
    ],
)
def test_w004_leaves_streaming_safe_middleware_alone(entry: str) -> None:
    with override_settings(MIDDLEWARE=[entry]):
        assert checks.check_middleware() == []


def test_w004_gzip_really_holds_back_a_sync_stream_before_django_6() -> None:
    """The reason behind W004: up to 5.2, Django's sync gzip path emits nothing until the end."""
    from django.utils.text import compress_sequence

    parts = list(compress_sequence((f" token{i}".encode() for i in range(100)), max_random_bytes=None))
    if GZIP_BUFFERS:
        assert len(parts) == 2  # the gzip header, then the whole body at the very end
    else:
        assert len(parts) > 100
    assert checks.gzip_holds_back_streams() is GZIP_BUFFERS


@pytest.mark.skipif(GZIP_BUFFERS, reason="Django < 6.0's gzip buffers streams")
def test_w004_silent_for_gzip_on_django_6() -> None:
    with override_settings(MIDDLEWARE=["django.middleware.gzip.GZipMiddleware"]):
        assert checks.check_middleware() == []


def test_conditional_get_leaves_post_streams_alone() -> None:
    from django.http import StreamingHttpResponse
    from django.middleware.http import ConditionalGetMiddleware
    from django.test import RequestFactory

    response = StreamingHttpResponse(iter([b"a", b"b"]))
    request = RequestFactory().post("/", HTTP_IF_NONE_MATCH="*")
    result = ConditionalGetMiddleware(lambda r: response)(request)
    assert result is response and not response.has_header("ETag")
    assert b"".join(result.streaming_content) == b"ab"  # type: ignore[arg-type]


# -- W005 --------------------------------------------------------------------------------------


_projects = iter(range(1_000_000))


class Project:
    def __init__(self, package: Path) -> None:
        self.package = package
        self.wsgi_application = f"{package.name}.wsgi.application"


@pytest.fixture
def wsgi_only_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project package with wsgi.py and no asgi.py."""
    package = tmp_path / f"syncproj{next(_projects)}"  # fresh name: imported packages stay in sys.modules
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text("application = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return Project(package)


def test_w005_aiobotocore_in_a_wsgi_only_project(wsgi_only_project: Project) -> None:
    with override_settings(
        BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}, WSGI_APPLICATION=wsgi_only_project.wsgi_application
    ):
        assert checks.is_wsgi_only()
        result = checks.check_async_transport_deployment()
    assert ids(result) == ["bedrock_stream.W005"]
    assert wsgi_only_project.wsgi_application in result[0].msg


def test_w005_silent_when_an_asgi_module_exists(wsgi_only_project: Project) -> None:
    (wsgi_only_project.package / "asgi.py").write_text("application = None\n")
    with override_settings(
        BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}, WSGI_APPLICATION=wsgi_only_project.wsgi_application
    ):
        assert checks.check_async_transport_deployment() == []


@pytest.mark.parametrize(
    "extra",
    [
        {"ASGI_APPLICATION": "proj.asgi.application"},
        {"BEDROCK_STREAM": {"ASYNC_TRANSPORT": "thread"}},
        {"BEDROCK_STREAM": {"ASYNC_TRANSPORT": "auto"}},
        {"WSGI_APPLICATION": None},
    ],
)
def test_w005_silent_otherwise(wsgi_only_project: Project, extra: dict[str, object]) -> None:
    values: dict[str, object] = {
        "BEDROCK_STREAM": {"ASYNC_TRANSPORT": "aiobotocore"},
        "WSGI_APPLICATION": wsgi_only_project.wsgi_application,
        **extra,
    }
    with override_settings(**values):
        assert checks.check_async_transport_deployment() == []


@pytest.mark.parametrize("app", ["daphne", "channels"])
def test_w005_silent_with_channels_or_daphne(
    wsgi_only_project: Project, monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    from django.conf import settings

    with override_settings(
        BEDROCK_STREAM={"ASYNC_TRANSPORT": "aiobotocore"}, WSGI_APPLICATION=wsgi_only_project.wsgi_application
    ):
        # Plain setattr, not override_settings: the app registry must not try to import the app.
        monkeypatch.setattr(settings, "INSTALLED_APPS", [app, *settings.INSTALLED_APPS])
        assert not checks.is_wsgi_only()
        assert checks.check_async_transport_deployment() == []


def test_w005_example_project_is_not_wsgi_only() -> None:
    with override_settings(WSGI_APPLICATION="example_project.wsgi.application"):
        assert not checks.is_wsgi_only()


@pytest.mark.parametrize("value, fragment", [
    ("fast", "must be a dict of model options"),
    ({"temperature": 7}, "temperature"),
    ({"warp_speed": True}, "Unknown Converse option"),
])
def test_e003_reports_a_bad_converse_setting_at_start_up(value: Any, fragment: str) -> None:
    """Caught by `check`, not by the first request's 500."""
    from django_bedrock_stream.checks import check_settings_values

    with override_settings(BEDROCK_STREAM={"CONVERSE": value}):
        errors = check_settings_values()
    assert [e.id for e in errors] == ["bedrock_stream.E003"] and fragment in errors[0].msg, errors


def test_e003_accepts_a_good_converse_setting() -> None:
    from django_bedrock_stream.checks import check_settings_values

    with override_settings(BEDROCK_STREAM={"CONVERSE": {"temperature": 0.2, "prompt_cache": True}}):
        assert check_settings_values() == []


def test_e004_tools_the_family_cannot_call_and_a_tool_choice_naming_none() -> None:
    from django_bedrock_stream.checks import check_tools
    from django_bedrock_stream.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    with _with_urls(
        path("llama/", Llama2StreamView.as_view(tools=[add])),
        path("choice/", ConverseStreamView.as_view(tools=[add], tool_choice="subtract")),
        path("fine/", ConverseStreamView.as_view(tools=[add], tool_choice="add")),
        path("none/", Llama2StreamView.as_view()),
    ):
        errors = check_tools()
    assert [e.id for e in errors] == ["bedrock_stream.E004"] * 2
    assert "'llama2' family cannot call them" in errors[0].msg and "'subtract'" in errors[1].msg


@pytest.mark.parametrize("value, fragment", [
    ("lots", "must be None or a dict"),
    ({"default": {"tokens": -1, "period": "day"}}, "'tokens' must be a whole number"),
    ({"users": {"alice": {"tokens": 5, "period": "fortnight"}}}, "period must be"),
    ({"groups": ["staff"]}, "['groups'] must be a dict"),
])
def test_e003_reports_a_bad_budgets_setting_at_start_up(value: Any, fragment: str) -> None:
    from django_bedrock_stream.checks import check_settings_values

    with override_settings(BEDROCK_STREAM={"BUDGETS": value}):
        errors = check_settings_values()
    assert [e.id for e in errors] == ["bedrock_stream.E003"] and fragment in errors[0].msg, errors


def test_e003_accepts_the_documented_budgets_shape() -> None:
    from django_bedrock_stream.checks import check_settings_values

    shape = {"default": {"tokens": 50_000, "period": "day"}, "groups": {"staff": {"tokens": 200_000, "period": "day"}},
             "users": {"alice": {"cost": "5.00", "period": "month"}}}
    with override_settings(BEDROCK_STREAM={"BUDGETS": shape}):
        assert check_settings_values() == []


# -- W009 --------------------------------------------------------------------------------------

SQLITE_SETTINGS = """
import django
from tests.settings import *  # noqa: F403

DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}, "OPTIONS": {options}}}}}
BEDROCK_STREAM = {bedrock}
"""
#: What the README's "Databases" paragraph documents (Django >= 5.1), and the Django 4.2 way.
DOCUMENTED_OPTIONS = ('{"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}'
                      if django.VERSION >= (5, 1) else '{"timeout": 20}')
RECEIVER = """
from django.db.backends.signals import connection_created

def wal(sender, connection, **kwargs):
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")

connection_created.connect(wal)
"""


def check_sqlite_file(tmp_path: Path, options: str, bedrock: str = "{}", extra: str = "", command: str = "check",
                      ) -> str:
    """``manage.py <command>`` in a subprocess on a SQLite file with these ``OPTIONS``; its output."""
    (tmp_path / "w009_settings.py").write_text(
        SQLITE_SETTINGS.format(db=str(tmp_path / "db.sqlite3"), options=options, bedrock=bedrock) + extra)
    args = ["-m", "django", command, "--settings=w009_settings"]
    args += ["--noinput", "-v", "0"] if command == "migrate" else ["--database", "default", "--tag", "database"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return _run(args, REPO, env)


def test_w009_a_sqlite_file_without_wal_or_busy_timeout(tmp_path: Path) -> None:
    out = check_sqlite_file(tmp_path, "{}")
    assert "(bedrock_stream.W009)" in out and "journal_mode is 'delete', not 'wal'" in out, out
    assert "the busy timeout is 5 s" in out and "database is locked" in out, out


def test_w009_also_runs_with_migrate(tmp_path: Path) -> None:
    assert "(bedrock_stream.W009)" in check_sqlite_file(tmp_path, '{"timeout": 20}', command="migrate")


@pytest.mark.parametrize("options, extra", [
    (DOCUMENTED_OPTIONS, "" if django.VERSION >= (5, 1) else RECEIVER),
    ('{"timeout": 30}', RECEIVER),  # WAL set by a connection_created receiver: read back from the connection
])
def test_w009_silent_with_the_documented_settings(tmp_path: Path, options: str, extra: str) -> None:
    out = check_sqlite_file(tmp_path, options, extra=extra)
    assert "W009" not in out and "no issues" in out, out


def test_w009_silent_when_the_app_writes_nothing(tmp_path: Path) -> None:
    out = check_sqlite_file(tmp_path, "{}", bedrock='{"PERSIST": False}')
    assert "W009" not in out, out
    assert "(bedrock_stream.W009)" in check_sqlite_file(tmp_path, "{}", bedrock=(
        '{"PERSIST": False, "BUDGETS": {"default": {"tokens": 1000, "period": "day"}}}'))


def test_w009_silent_for_an_in_memory_or_non_sqlite_database() -> None:
    """The test database (in-memory SQLite, or PostgreSQL) and a plain ``check`` (no databases)."""
    assert checks.check_sqlite_concurrency(databases=["default"]) == []
    assert checks.check_sqlite_concurrency() == []
