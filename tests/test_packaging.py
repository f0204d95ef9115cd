"""The wheel carries everything the app serves: `pip install .` into a fresh venv renders every page.

The templates live at the top level of the checkout (`templates/`, as the design lays out) and
pyproject.toml maps them into the package; a page rendered from the installed wheel, far from the
checkout, proves the mapping, and a missing template or static file fails here rather than in
production.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs inside the fresh venv, from an empty folder, so the checkout cannot be imported by accident.
PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import connector
    from connector import create_app

    data = Path(sys.argv[1])
    app = create_app({"app": {"data_dir": str(data), "base_url": "http://localhost"},
                      "database": {"url": f"sqlite:///{data / 'connector.db'}"}})
    app.extensions["connector"].db.migrate()
    client = app.test_client()
    pages = {path: client.get(path) for path in ("/login", "/static/style.css", "/static/app.js")}
    print(json.dumps({
        "package": connector.__file__,
        "templates": app.jinja_loader.searchpath,
        "status": {path: response.status_code for path, response in pages.items()},
        "login_form": 'name="password"' in pages["/login"].get_data(as_text=True),
        "templates_in_wheel": sorted(str(p.relative_to(Path(connector.__file__).parent / "templates"))
                                     for p in (Path(connector.__file__).parent / "templates").rglob("*.html")),
    }))
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with only the built wheel of this checkout, the folder holding the wheel)."""
    root = tmp_path_factory.mktemp("packaging")
    wheels = root / "wheels"
    # Built from a copy without the build leftovers of a working tree (build/, *.egg-info): setuptools
    # reuses an old SOURCES.txt, which can hide a file the package data no longer names.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                                "instance", "__pycache__", "bench", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(wheels), str(source)], check=True, capture_output=True)
    target = root / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    # The app's dependencies come from the test venv (offline and fast): a .pth line puts its
    # site-packages after the fresh venv's own, where only the wheel's `connector` is installed.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    [wheel] = wheels.glob("connector-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    return python, root


def test_the_installed_wheel_serves_pages_with_its_own_templates(installed):
    python, root = installed
    workdir = root / "run"
    workdir.mkdir()
    out = subprocess.run([str(python), "-c", PROBE, str(workdir / "instance")], cwd=workdir, check=True,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    venv_dir = python.parent.parent
    assert Path(probe["package"]).is_relative_to(venv_dir), probe["package"]  # not the checkout
    assert all(Path(p).is_relative_to(venv_dir) for p in probe["templates"]), probe["templates"]
    assert probe["status"] == {"/login": 200, "/static/style.css": 200, "/static/app.js": 200}
    assert probe["login_form"]
    in_checkout = sorted(str(p.relative_to(REPO / "templates")) for p in (REPO / "templates").rglob("*.html"))
    assert probe["templates_in_wheel"] == in_checkout


def test_the_wheel_carries_the_migrations(installed):
    python, root = installed
    listing = subprocess.run(
        [str(python), "-c", "import connector, pathlib; p = pathlib.Path(connector.__file__).parent / 'migrations';"
                            "print('\\n'.join(sorted(x.name for x in (p / 'versions').glob('*.py'))))"],
        cwd=root, check=True, capture_output=True, text=True).stdout.split()
    assert listing == sorted(p.name for p in (REPO / "connector" / "migrations" / "versions").glob("*.py"))


def test_the_wheel_carries_every_module(installed):
    """The package list in pyproject.toml is explicit (for the templates' mapping): a new subpackage left
    out of it would be missing from the wheel, and `connector worker` would fail on import there."""
    python, root = installed
    in_checkout = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "connector").rglob("*.py")
                         if "migrations" not in p.parts)
    probe = ("import importlib, json, sys; bad = {}\n"
             "for name in sys.argv[1:]:\n"
             "    try: importlib.import_module(name.removesuffix('.__init__'))\n"
             "    except Exception as exc: bad[name] = repr(exc)\n"
             "print(json.dumps(bad))")
    out = subprocess.run([str(python), "-c", probe, *in_checkout], cwd=root, check=True, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
