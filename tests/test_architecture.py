"""The import arrows the README draws, checked: dependencies point inward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bridge"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules() -> dict[str, set[str]]:
    return {
        str(p.relative_to(PACKAGE.parent).with_suffix("")).replace("/", "."): imports_of(p)
        for p in PACKAGE.rglob("*.py")
    }


def uses(imports: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in imports)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("bridge.core.store", ["telegram", "aiohttp", "bridge.nusasms"]),
        ("bridge.group.render", ["telegram", "aiohttp", "bridge"]),
        ("bridge.core.pacing", ["telegram", "aiohttp", "bridge"]),
        ("bridge.channels.intake", ["telegram", "aiohttp"]),
        ("bridge.channels.outbox", ["telegram", "aiohttp.web"]),
        ("bridge.channels.media", ["telegram", "aiohttp"]),
        ("bridge.group.markup", ["telegram.ext", "aiohttp", "bridge"]),
    ],
)
def test_inner_modules_know_nothing_of_the_outside(module: str, forbidden: list[str]) -> None:
    # The bot's texts (bridge.core.texts) are pure too: strings in, strings out.
    imports = modules()[module] - {"bridge.core.texts"}
    assert not [f for f in forbidden if uses(imports, f)]


def test_the_texts_know_nothing_but_their_catalog() -> None:
    assert modules()["bridge.core.texts"] == {
        "__future__",
        "datetime",
        "typing",
        "bridge.core.texts_id",
    }
    assert modules()["bridge.core.texts_id"] == {"__future__"}


def test_the_nusasms_library_stands_alone() -> None:
    for name, imports in modules().items():
        if name.startswith("bridge.nusasms"):
            outside = {
                i for i in imports if uses({i}, "bridge") and not uses({i}, "bridge.nusasms")
            }
            assert not outside, name
            assert not uses(imports, "telegram"), name


def test_only_the_composition_root_sees_telegram_ext_and_only_server_and_root_aiohttp_web() -> None:
    for name, imports in modules().items():
        if uses(imports, "telegram.ext"):
            assert name == "bridge.app", name
        if uses(imports, "aiohttp") and not name.startswith("bridge.sandbox"):
            assert name in ("bridge.app", "bridge.web.server", "bridge.nusasms.client"), name


def test_the_sandbox_stands_beside_the_bridge() -> None:
    # The bridge reaches the emulator over HTTP only, as it reaches NusaSMS; the emulator
    # knows the bridge only through the reference's shapes.
    for name, imports in modules().items():
        inside = name.startswith("bridge.sandbox")
        if inside:
            assert not {
                i for i in imports if uses({i}, "bridge") and not uses({i}, "bridge.sandbox")
            }, name
        elif name != "bridge.cli":
            assert not uses(imports, "bridge.sandbox"), name


# Which sides each side may import, besides itself (the README's Layout draws the same).
SIDES = {
    "bridge.core": {"bridge.core"},
    "bridge.channels": {"bridge.core", "bridge.nusasms"},
    "bridge.ops": {"bridge.core", "bridge.nusasms"},
    "bridge.group": {"bridge.core", "bridge.nusasms", "bridge.channels", "bridge.ops"},
    "bridge.web": {
        "bridge.core",
        "bridge.nusasms",
        "bridge.channels",
        "bridge.ops",
        "bridge.group",
    },
}


def side_of(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bridge" and len(parts) > 1 else None


@pytest.mark.parametrize("side", sorted(SIDES))
def test_each_side_imports_only_the_sides_below_it(side: str) -> None:
    allowed = SIDES[side] | {side}
    wrong = {
        (name, i)
        for name, imports in modules().items()
        if name.startswith(side + ".") or name == side
        for i in imports
        if uses({i}, "bridge") and side_of(i) not in allowed
    }
    assert not wrong


@pytest.mark.parametrize("side", ["bridge.core", "bridge.channels"])
def test_the_inner_sides_know_nothing_of_telegram(side: str) -> None:
    for name, imports in modules().items():
        if name.startswith(side + "."):
            assert not uses(imports, "telegram"), name


def test_every_module_lives_in_a_side_but_the_composition_root() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "app", "cli"}
