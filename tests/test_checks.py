"""System checks: each function called directly under ``override_settings``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import django
import pytest
from django.core import checks as django_checks
from django.core.management import call_command
from django.test import override_settings
from django.urls import include, path

from django_bedrock_stream import checks
from django_bedrock_stream.views import ConverseStreamView, Llama2StreamView


def ids(messages: list[django_checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


# -- registration ------------------------------------------------------------------------------


def test_every_check_is_registered_with_the_app_tag() -> None:
    registered: list[Any] = list(django_checks.registry.registry.get_checks())
    for check, _tags in checks.CHECKS:
        assert check in registered
        assert checks.TAG in getattr(check, "tags", ())


def test_manage_py_check_with_the_tag_runs(bedrock_emulator: object) -> None:
    import io

    out = io.StringIO()
    with override_settings(BEDROCK_STREAM={"ALLOW_ANONYMOUS": True, "ALLOWED_MODELS": ["m"]}):
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


def test_w003_default_urls_with_no_models() -> None:
    # tests.urls includes django_bedrock_stream.urls, which routes ConverseStreamView.
    with override_settings(BEDROCK_STREAM={"ALLOWED_MODELS": []}):
        result = checks.check_converse_models()
    assert set(ids(result)) == {"bedrock_stream.W003"}
    (warning,) = [m for m in result if m.obj is ConverseStreamView]
    assert "'/bedrock/converse/'" in warning.msg
    assert ConverseStreamView.family_class.default_model_id in warning.msg


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
