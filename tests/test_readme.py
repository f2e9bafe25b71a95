"""The README as a new user meets it: every Python block runs as written, and the install path works.

``test_readme_python_blocks_run_as_written`` makes a fresh project the way the README's "Setup" does
(``django-admin startproject myproject`` + ``manage.py startapp myapp``, in a temporary directory, with
the test run's interpreter) and puts every ```python block of README.md where the block says it goes:

* a block whose first line is a comment naming a file (``# myproject/urls.py``, ``# myapp/views.py``)
  is appended to that file, in README order (so ``urlpatterns += [...]`` adds to the routes before it);
* any other block is a script, run on its own from the project directory;
* a block can only be left out with ``<!-- readme-test: skip <reason> -->`` on the line just before it.

Then it runs ``makemigrations`` / ``migrate`` / ``check`` and sends a real request through every view
the blocks define, under ``runserver`` (WSGI) and uvicorn (ASGI), against the emulator. The project
reaches the emulator only through ``BEDROCK_STREAM["ENDPOINT_URL"]`` and its region only through the
README's own settings (no ``AWS_*`` region or endpoint in the environment), so a snippet that builds its
own boto3 client at import time fails here as it fails for a user.

``test_wheel_builds_installs_and_runs`` follows the "Install" section: ``python -m build`` in a copy of
the checkout, the wheel installed into a fresh virtualenv, and the installed package (not the
checkout) imported, migrated and streamed from.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from django_bedrock_stream.emulator import BedrockEmulator

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PROJECT, APP = "myproject", "myapp"
USERNAME, PASSWORD = "alice", "secret"
# What the project must not inherit from the test run: its own settings module, the checkout on the
# path, and any AWS region/endpoint (the README's settings must provide those).
_DROPPED_ENV = (
    "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
)

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\b\s*(.*?)\s*-->\s*$")
_LABEL = re.compile(r"#\s*(\S+\.py)\b")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    path: str | None  # the project file the block belongs in; None for a script
    skip: str | None  # the reason given by a skip marker


def readme_blocks(text: str) -> list[Block]:
    """The README's ```python blocks, with where each goes."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.match(before)
        code = match.group(1)
        label = _LABEL.match(code.split("\n", 1)[0])
        path = label.group(1) if label else None
        if path is not None:
            assert path.split("/")[0] in (PROJECT, APP) and ".." not in path, (
                f"README.md:{line}: the block is labelled {path!r}; a file block must name a file of the "
                f"project, under {PROJECT}/ or {APP}/"
            )
        blocks.append(Block(line, code, path, skip.group(1) if skip else None))
    return blocks


def test_readme_blocks_are_found_and_labelled() -> None:
    """The extractor sees every block; the ones meant for a file say which; skips carry a reason."""
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    assert len(blocks) == text.count("```python"), "a ```python fence the extractor does not parse"
    labelled = {b.path for b in blocks if b.path}
    for path in (f"{PROJECT}/settings.py", f"{PROJECT}/urls.py", f"{APP}/views.py", f"{APP}/apps.py",
                 f"{APP}/models.py", f"{APP}/receivers.py"):
        assert path in labelled, f"no README block is labelled # {path}"
    for block in blocks:
        if block.skip is not None:
            assert block.skip, f"README.md:{block.line}: a skip marker needs a reason"


_SH_FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def test_every_make_command_of_the_readme_is_a_target() -> None:
    """Each ``make <target>`` line of the README's ```sh blocks names a target of the Makefile (a dry
    run, ``make -n``, which runs nothing), so the commands a reader copies exist."""
    targets = [
        line.split("#", 1)[0].split()[1]
        for block in _SH_FENCE.findall(README.read_text(encoding="utf-8"))
        for line in block.splitlines()
        if line.startswith("make ")
    ]
    assert {"demo", "test", "test-postgres", "lint", "test-matrix"} <= set(targets), targets
    for target in targets:
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, f"README: make {target}: {dry.stderr.strip()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _project_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    # Nothing from ~/.aws either: the region comes from the README's BEDROCK_STREAM only.
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-config")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def _make_project(tmp: Path, blocks: list[Block], endpoint_url: str, env: dict[str, str]) -> Path:
    root = tmp / "project"
    root.mkdir()
    _run(["-m", "django", "startproject", PROJECT, str(root)], tmp, env)
    _run(["manage.py", "startapp", APP], root, env)
    for block in blocks:
        if block.path is None or block.skip is not None:
            continue
        target = root / block.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as f:
            f.write(f"\n\n# --- README.md:{block.line}\n{block.code}")
    # What the README's emulator section says: point BEDROCK_STREAM at it (the README sets the region).
    with (root / PROJECT / "settings.py").open("a", encoding="utf-8") as f:
        f.write(f"\n\n# --- tests/test_readme.py\nBEDROCK_STREAM = {{**BEDROCK_STREAM, 'ENDPOINT_URL': {endpoint_url!r}}}\n")
    return root


def _defined_views(blocks: list[Block]) -> set[str]:
    """Top-level functions and classes of the README's views modules."""
    names: set[str] = set()
    for block in blocks:
        if block.path == f"{APP}/views.py" and block.skip is None:
            tree = ast.parse(block.code)
            names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    return names


# One real request per route the README defines: (path, credentials, JSON body).
MESSAGES = [{"role": "user", "content": "Name three rivers."}]
ROUTES = [
    ("/bedrock/llama2/", "basic", {"messages": MESSAGES}),
    ("/support/chat/", "basic", {"messages": MESSAGES}),
    ("/chat/", "session", {"messages": MESSAGES}),
    ("/api/chat/", "token", {"messages": MESSAGES, "model": "anthropic.claude-3-5-sonnet-20240620-v1:0"}),
    ("/api/llama3/", "basic", {"messages": MESSAGES}),
    ("/api/converse/", "basic", {"messages": MESSAGES}),
    ("/assistant/", "basic", {"messages": MESSAGES}),
]
# The routes served by the library's views, whose streams fire stream_completed (the plain-function
# view does not).
SIGNALLING = [path for path, _, _ in ROUTES if path != "/chat/"]

SETUP_SCRIPT = """
import importlib, io, json
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import resolve
get_user_model().objects.create_superuser({username!r}, "alice@example.com", {password!r})
out = io.StringIO()
call_command("drf_create_token", {username!r}, stdout=out)   # as the README says
for module in {modules!r}:
    importlib.import_module(module)
views = {{}}
for path in {paths!r}:
    func = resolve(path).func
    views[path] = getattr(func, "view_class", func).__name__
print(json.dumps({{"token": out.getvalue().split()[2], "views": views}}))
"""

COUNT_SCRIPT = """
import json, time
from django_bedrock_stream.models import Completion
from myapp.models import Usage
deadline = time.monotonic() + 20
while Usage.objects.count() < {expected} and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({{
    "usage_users": sorted(set(Usage.objects.values_list("user__username", flat=True))),
    "usage": Usage.objects.count(),
    "usage_tokens": list(Usage.objects.values_list("input_tokens", "output_tokens")),
    "completions": sorted(Completion.objects.values_list("status", flat=True)),
}}))
"""


@contextmanager
def _server(kind: str, root: Path, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    args = {
        "wsgi": ["manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        "asgi": ["-m", "uvicorn", f"{PROJECT}.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
    }[kind]
    log = (root / f"{kind}.log").open("w+", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the {kind} server exited {proc.returncode}"
            try:
                httpx.get(url + "/admin/login/", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"the {kind} server did not start"
                time.sleep(0.2)
        yield url
    except BaseException:
        log.seek(0)
        print(f"--- {kind} server log\n{log.read()}")
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _session_login(client: httpx.Client) -> None:
    """Log in through the admin's login form, as a browser would (the README routes the admin)."""
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/",
        data={"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"],
              "next": "/admin/"},
    )
    assert response.status_code == 302, response.text[:500]


def _exercise(url: str, token: str, emulator: BedrockEmulator) -> None:
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        for path, _, body in ROUTES:
            before = len(emulator.requests)
            response = anonymous.post(path, json=body)
            assert response.status_code in (302, 401, 403), (path, response.status_code, response.text[:300])
            assert len(emulator.requests) == before, f"an anonymous request to {path} reached Bedrock"

    with httpx.Client(base_url=url, timeout=30) as browser:
        _session_login(browser)
        for path, auth, body in ROUTES:
            before = len(emulator.requests)
            if auth == "session":
                response = browser.post(path, json=body, headers={"X-CSRFToken": browser.cookies["csrftoken"]})
            else:
                response = httpx.post(
                    url + path, json=body, timeout=30,
                    auth=(USERNAME, PASSWORD) if auth == "basic" else None,
                    headers={"Authorization": f"Token {token}"} if auth == "token" else None,
                )
            assert response.status_code == 200, (path, response.status_code, response.text[:500])
            requests = emulator.requests
            assert len(requests) == before + 1, f"{path}: expected one Bedrock call"
            call = requests[-1]
            assert call["status"] == "completed" and call["text"], (path, call)
            if path == "/api/llama3/":
                assert response.headers["content-type"].startswith("text/event-stream")
                assert "event: done" in response.text
            elif path == "/assistant/":  # "Tools": the ui protocol
                assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
                assert '"type":"finish"' in response.text and response.text.endswith("data: [DONE]\n\n")
            else:
                assert response.text == call["text"], path
            if path == "/chat/":
                assert call["model_id"] == "meta.llama2-13b-chat-v1"
            if path == "/support/chat/":
                assert call["model_id"] == "anthropic.claude-3-5-sonnet-20240620-v1:0"
                assert "ACME routers" in call["body"]["system"]
                assert call["body"]["temperature"] == 0.2 and call["body"]["max_tokens"] == 800
            if path == "/api/chat/":
                assert call["operation"].startswith("converse") and call["model_id"] == body["model"]


def test_readme_python_blocks_run_as_written(bedrock_emulator: BedrockEmulator, tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    env = _project_env(tmp_path)
    root = _make_project(tmp_path, blocks, bedrock_emulator.url, env)

    _run(["manage.py", "makemigrations", APP], root, env)
    _run(["manage.py", "migrate", "--noinput"], root, env)
    _run(["manage.py", "check", "--fail-level", "WARNING"], root, env)   # not even a warning

    for block in blocks:
        if block.path is None and block.skip is None:
            script = root / f"readme_block_{block.line}.py"
            script.write_text(block.code, encoding="utf-8")
            assert _run([script.name], root, dict(env, DJANGO_SETTINGS_MODULE=f"{PROJECT}.settings")).strip()

    modules = sorted({b.path[:-3].replace("/", ".") for b in blocks if b.path and b.skip is None})
    setup = json.loads(_run(["manage.py", "shell", "-c", SETUP_SCRIPT.format(
        username=USERNAME, password=PASSWORD, modules=modules, paths=[path for path, _, _ in ROUTES],
    )], root, env).strip().splitlines()[-1])
    untested = _defined_views(blocks) - set(setup["views"].values())
    assert not untested, f"README views with no request in ROUTES: {sorted(untested)}"

    for kind in ("wsgi", "asgi"):
        with _server(kind, root, env) as url:
            _exercise(url, setup["token"], bedrock_emulator)

    # The receiver of example (d), connected by the README's AppConfig.ready(), billed every stream.
    expected = 2 * len(SIGNALLING)
    counts = json.loads(_run(["manage.py", "shell", "-c", COUNT_SCRIPT.format(expected=expected)], root, env)
                        .strip().splitlines()[-1])
    assert counts["usage"] == expected and counts["usage_users"] == [USERNAME], counts
    assert all(inp > 0 and out > 0 for inp, out in counts["usage_tokens"]), counts
    assert counts["completions"] == ["completed"] * expected, counts


# ---------------------------------------------------------------------------------------------------
# The install path: python -m build, then the wheel in a fresh virtualenv.

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "node_modules", ".hypothesis",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.sqlite3", "results",
)

SMOKE_SCRIPT = """
import json
import django
from django.conf import settings
from django_bedrock_stream.emulator import BedrockEmulator   # no Django needed: start it first
with BedrockEmulator(port=0, tokens=4) as emu:
    settings.configure(
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "rest_framework",
                        "django_bedrock_stream"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        BEDROCK_STREAM={"REGION": "us-east-1", "ENDPOINT_URL": emu.url},
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command
    from django.db.migrations.recorder import MigrationRecorder
    import django_bedrock_stream
    from django_bedrock_stream.client import get_client
    from django_bedrock_stream.streams import llama3_stream
    call_command("migrate", verbosity=0)
    migrated = MigrationRecorder.Migration.objects.filter(app="django_bedrock_stream")
    response = get_client().invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "hi"}))
    text = "".join(llama3_stream(response))
    print(json.dumps({
        "files": [django_bedrock_stream.__file__, BedrockEmulator.__init__.__code__.co_filename],
        "migrated": sorted(migrated.values_list("name", flat=True)),
        "streamed": text, "emulated": emu.requests[-1]["text"],
    }))
"""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def test_wheel_builds_installs_and_runs(tmp_path: Path) -> None:
    src, dist, venv, cwd = (tmp_path / name for name in ("src", "dist", "venv", "cwd"))
    # A copy, so the build neither reads stale build/ output nor writes into the working tree.
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], env=env, check=True,
                   capture_output=True, timeout=180)
    (wheel,) = dist.glob("django_bedrock_stream-*.whl")
    (sdist,) = dist.glob("django_bedrock_stream-*.tar.gz")

    # The wheel holds the whole package (code and data files) and nothing else.
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(src).as_posix() for path in (src / "django_bedrock_stream").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    for required in ("py.typed", "templates/admin/django_bedrock_stream/completion/change_list.html",
                     "migrations/0001_initial.py", "emulator/server.py", "emulator/__main__.py",
                     "management/commands/bedrock_emulator.py"):
        assert f"django_bedrock_stream/{required}" in names, required
    assert {name.split("/")[0] for name in names} == {"django_bedrock_stream", wheel.name.split("-py")[0] + ".dist-info"}
    with tarfile.open(sdist) as archive:
        sdist_top = {name.split("/")[1] for name in archive.getnames() if "/" in name}
    assert not sdist_top & {"tests", "example_project", "benchmarks"}, sdist_top

    # A plain venv (no system site-packages) gets the wheel alone; the dependencies come from this
    # run's site-packages through a .pth file, which appends them *after* the venv's own site-packages
    # and does not run this environment's editable-install hook, so only the wheel can be imported.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = _venv_python(venv)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", str(wheel)],
        env=env, check=True, capture_output=True, timeout=120,
    )
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(venv_site, "_test_readme_deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    cwd.mkdir()  # an empty working directory: nothing importable but the venv and the dependencies
    (cwd / "smoke.py").write_text(SMOKE_SCRIPT)
    smoke_env = dict(env, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")   # the emulator takes any
    out = subprocess.run([str(python), "smoke.py"], cwd=cwd, env=smoke_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for file in result["files"]:
        assert Path(file).resolve().is_relative_to(venv.resolve()), f"imported {file}, not the wheel in {venv}"
    assert "0001_initial" in result["migrated"]
    assert result["streamed"] and result["streamed"] == result["emulated"]
