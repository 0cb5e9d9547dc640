"""The image is reproducible: the lock file keeps up with pyproject.toml, the Dockerfile uses it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
LOCK = ROOT / "requirements.lock"
REGENERATE = (
    "regenerate it: pip-compile --generate-hashes --strip-extras --allow-unsafe "
    "--all-build-deps --no-emit-index-url --no-emit-find-links "
    "--index-url https://pypi.org/simple --output-file requirements.lock pyproject.toml"
)


def locked() -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes), from requirements.lock."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (Version(pin.group(2)), 0)
        elif current and re.match(r"^\s+--hash=sha256:[0-9a-f]{64}", line):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def declared() -> list[Requirement]:
    """Runtime and build requirements of pyproject.toml (not the test extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = project["project"]["dependencies"] + project["build-system"]["requires"]
    return [Requirement(r) for r in names]


def test_the_lock_pins_every_runtime_and_build_dependency_within_its_range() -> None:
    pins = locked()
    missing = [str(r) for r in declared() if canonicalize_name(r.name) not in pins]
    assert not missing, f"requirements.lock lacks {missing}; {REGENERATE}"
    outside = [
        f"{r} (locked {pins[canonicalize_name(r.name)][0]})"
        for r in declared()
        if not r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True)
    ]
    assert not outside, f"requirements.lock pins outside pyproject.toml: {outside}; {REGENERATE}"


def test_every_locked_package_has_a_hash() -> None:
    # pip --require-hashes refuses the whole file if one pin has none.
    pins = locked()
    assert len(pins) >= len(declared())
    assert not [name for name, (_, hashes) in pins.items() if hashes == 0]


def test_the_dockerfile_installs_the_lock_by_hash_on_a_base_pinned_by_digest() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11[0-9.]*-slim[a-z-]*@sha256:[0-9a-f]{64}", base.group(1))
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "--require-hashes" in dockerfile
    assert "-r requirements.lock" in dockerfile
    assert "--no-deps" in dockerfile
    assert 'CMD ["bridge", "health"' in dockerfile  # follows server.port; no port baked in
    assert "8080/healthz" not in dockerfile


def test_the_build_context_keeps_what_the_build_copies() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("requirements.lock", "pyproject.toml", "README.md", "bridge"):
        assert needed not in ignored
    for secret in ("config.yaml", "*.env", ".git"):
        assert secret in ignored
