"""A small, dependency-free mutation run over the bridge's rule code.

    python tests/mutants/run.py                 # every target
    python tests/mutants/run.py pacing store    # some targets (names below)
    python tests/mutants/run.py --list          # the mutants, without running anything
    python tests/mutants/run.py store --only 20 21   # some mutants of one target, by number

Each mutant is one small change to one file (a comparison flipped, min for max, + for -, a
number moved by one, a statement or an `await` deleted, True for False, a returned value
replaced by None), applied to a COPY of the worktree in a temporary directory: bridge/ in
the worktree is never written. The copy runs the target's tests with `-x` and a timeout;
a mutant the tests do not notice is a survivor, written to the report with its line.

Log calls (`log.warning(...)`) are not mutated: what a log line says is not a rule.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    """A file, the functions in it to mutate (None: all of it), and the tests that guard it."""

    path: str
    functions: frozenset[str] | None
    tests: tuple[str, ...]


TARGETS: dict[str, Target] = {
    "pacing": Target("bridge/core/pacing.py", None, ("tests/test_pacing.py",)),
    "intake": Target("bridge/channels/intake.py", None, ("tests/test_intake.py",)),
    "outbox": Target(
        "bridge/channels/outbox.py",
        frozenset(
            {"status_rank", "_apply_statuses", "_refused_outright", "_retry_after", "_retry_later"}
        ),
        ("tests/test_outbox_rules.py",),
    ),
    "store": Target(
        "bridge/core/store.py",
        frozenset(
            {
                "add",
                "_commit_loop",
                "_commit",
                "_transaction",
                "add_reply",
                "requeue_reply",
                "apply_statuses",
                "mark_posted",
            }
        ),
        ("tests/test_store.py",),
    ),
}

LOG_NAMES = {"log", "logger", "logging"}


@dataclass(frozen=True)
class Mutant:
    """One change: where it is and what it does."""

    target: str
    index: int
    line: int
    description: str


Apply = Callable[[], None]


def _is_log_call(node: ast.AST) -> bool:
    call = node.value if isinstance(node, ast.Expr) else node
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    owner = call.func.value
    return isinstance(owner, ast.Name) and owner.id in LOG_NAMES


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


_BOUNDARY: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
}
_NEGATION: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.LtE: ast.Gt,
    ast.Gt: ast.LtE,
    ast.GtE: ast.Lt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
}
_OP_TEXT = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}


# Deleting an import or a whole definition only proves that the module is used at all.
_WHOLE = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _mutations(node: ast.AST) -> Iterator[tuple[str, Apply]]:
    """Every mutation of this one node, as (description, apply in place)."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for table in (_BOUNDARY, _NEGATION):
                new = table.get(type(op))
                if new is not None:

                    def flip(i: int = i, new: type[ast.cmpop] = new) -> None:
                        node.ops[i] = new()

                    yield f"{_OP_TEXT[type(op)]} -> {_OP_TEXT[new]}", flip
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        new_op = _BINOPS[type(node.op)]

        def swap() -> None:
            node.op = new_op()

        yield f"{_OP_TEXT[type(node.op)]} -> {_OP_TEXT[new_op]}", swap
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
        new_aug = _BINOPS[type(node.op)]

        def swap_aug() -> None:
            node.op = new_aug()

        yield f"{_OP_TEXT[type(node.op)]}= -> {_OP_TEXT[new_aug]}=", swap_aug
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And

        def swap_bool() -> None:
            node.op = other()

        yield f"{type(node.op).__name__.lower()} -> {other.__name__.lower()}", swap_bool
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in ("min", "max"):
            other_name = "max" if node.func.id == "min" else "min"

            def swap_call() -> None:
                assert isinstance(node.func, ast.Name)
                node.func.id = other_name

            yield f"{node.func.id}() -> {other_name}()", swap_call
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):

            def negate() -> None:
                node.value = not value

            yield f"{value} -> {not value}", negate
        elif isinstance(value, int | float):
            for delta in (1, -1):

                def shift(delta: int = delta) -> None:
                    node.value = value + delta

                yield f"{value!r} -> {value + delta!r}", shift
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not x -> x", lambda: None  # placeholder, replaced by the parent (see below)
    elif isinstance(node, ast.Await):
        yield "await deleted", lambda: None  # replaced by the parent (see below)


def _children_mutations(parent: ast.AST) -> Iterator[tuple[ast.AST, str, Apply]]:
    """Mutations that replace a child: drop `not`, drop `await`, return None, delete stmt."""
    for field, value in ast.iter_fields(parent):
        if isinstance(value, list):
            for i, child in enumerate(value):
                if isinstance(child, ast.stmt):
                    if _is_docstring(child) or _is_log_call(child) or isinstance(child, _WHOLE):
                        continue
                    if len(value) == 1 and isinstance(child, ast.Pass):
                        continue

                    def delete(items: list[ast.AST] = value, i: int = i) -> None:
                        items[i] = ast.Pass()

                    yield child, f"statement deleted: {ast.unparse(child)[:60]!r}", delete
                elif isinstance(child, ast.UnaryOp | ast.Await):
                    yield from _unwrap(child, value, i)
        elif isinstance(value, ast.UnaryOp | ast.Await):
            if isinstance(parent, ast.Expr) and isinstance(value, ast.Await):
                continue  # `await f()` alone: the same as deleting the statement
            yield from _unwrap(value, parent, field)
    if isinstance(parent, ast.Return) and parent.value is not None:
        returned = parent.value
        if not (isinstance(returned, ast.Constant) and returned.value is None):

            def to_none() -> None:
                parent.value = ast.Constant(None)

            yield parent, f"return {ast.unparse(returned)[:40]} -> return None", to_none


def _unwrap(
    node: ast.UnaryOp | ast.Await, holder: list[ast.AST] | ast.AST, where: int | str
) -> Iterator[tuple[ast.AST, str, Apply]]:
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not):
        return
    inner = node.operand if isinstance(node, ast.UnaryOp) else node.value
    label = "not deleted" if isinstance(node, ast.UnaryOp) else "await deleted"

    def replace() -> None:
        if isinstance(holder, list):
            assert isinstance(where, int)
            holder[where] = inner
        else:
            assert isinstance(where, str)
            setattr(holder, where, inner)

    yield node, f"{label}: {ast.unparse(node)[:60]!r}", replace


def _in_scope(tree: ast.Module, functions: frozenset[str] | None) -> list[ast.AST]:
    """The roots to mutate: the named functions (at any depth), or the whole module."""
    if functions is None:
        return [tree]
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in functions
    ]


def _points(tree: ast.Module, target: Target) -> Iterator[tuple[int, str, Apply]]:
    """Every mutation of the target's scope, in a stable order."""
    for root in _in_scope(tree, target.functions):
        skip: set[int] = set()
        for node in ast.walk(root):
            if id(node) in skip:
                continue
            if _is_log_call(node) or (isinstance(node, ast.Expr) and _is_log_call(node.value)):
                skip.update(id(n) for n in ast.walk(node))
                continue
            if isinstance(node, ast.Expr) and _is_docstring(node):
                continue
            # Annotations and decorators are not behaviour.
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for part in [*node.decorator_list, node.returns, *_annotations(node.args)]:
                    if part is not None:
                        skip.update(id(n) for n in ast.walk(part))
            if isinstance(node, ast.AnnAssign):
                skip.update(id(n) for n in ast.walk(node.annotation))
            for child, description, apply in _children_mutations(node):
                if id(child) not in skip:
                    yield getattr(child, "lineno", 0), description, apply
            for description, apply in _mutations(node):
                if isinstance(node, ast.UnaryOp | ast.Await):
                    continue  # handled by the parent
                yield getattr(node, "lineno", 0), description, apply


def _annotations(args: ast.arguments) -> list[ast.expr | None]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [a.annotation for a in every if a is not None]


def mutants(name: str) -> list[Mutant]:
    """The target's mutants, numbered."""
    target = TARGETS[name]
    tree = ast.parse((ROOT / target.path).read_text(encoding="utf-8"))
    return [
        Mutant(name, i, line, description)
        for i, (line, description, _) in enumerate(_points(tree, target))
    ]


def mutated_source(mutant: Mutant) -> str:
    """The target file with exactly this mutant applied."""
    target = TARGETS[mutant.target]
    tree = ast.parse((ROOT / target.path).read_text(encoding="utf-8"))
    work = copy.deepcopy(tree)
    for i, (_, _, apply) in enumerate(_points(work, target)):
        if i == mutant.index:
            apply()
            break
    else:
        raise IndexError(mutant)
    return ast.unparse(ast.fix_missing_locations(work))


def _copy_worktree(into: Path) -> Path:
    copy_root = into / "wt"
    shutil.copytree(
        ROOT,
        copy_root,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".*_cache"),
    )
    return copy_root


def _pytest(copy_root: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """Run tests in the copy: 'passed', 'failed' or 'timeout', and how long it took."""
    env = {**os.environ, "PYTHONPATH": str(copy_root), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *tests],
            cwd=copy_root,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    outcome = "passed" if result.returncode == 0 else "failed"
    return outcome, time.monotonic() - started


def _check_imports_copy(copy_root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy_root)}
    where = subprocess.run(
        [sys.executable, "-c", "import bridge; print(bridge.__file__)"],
        cwd=copy_root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.startswith(str(copy_root)):
        raise SystemExit(f"the copy imports bridge from {where}, not from {copy_root}")


def run(
    names: list[str],
    report: Path | None,
    override: tuple[str, ...] = (),
    only: frozenset[int] = frozenset(),
) -> int:
    """Run every mutant of the named targets; print and optionally write the survivors."""
    survivors: list[Mutant] = []
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bridge-mutants-") as tmp:
        copy_root = _copy_worktree(Path(tmp))
        _check_imports_copy(copy_root)
        for name in names:
            target = TARGETS[name]
            chosen = override or target.tests
            tests = tuple(t for t in chosen if (copy_root / t.split("::")[0]).exists())
            if not tests:
                print(f"{name}: no tests yet, skipped")
                continue
            outcome, baseline = _pytest(copy_root, tests, timeout=600)
            if outcome != "passed":
                raise SystemExit(f"{name}: the unmutated tests do not pass ({outcome})")
            timeout = max(20.0, 3 * baseline)
            original = (copy_root / target.path).read_text(encoding="utf-8")
            found = [m for m in mutants(name) if not only or m.index in only]
            killed = 0
            try:
                for mutant in found:
                    (copy_root / target.path).write_text(mutated_source(mutant), encoding="utf-8")
                    outcome, _ = _pytest(copy_root, tests, timeout)
                    if outcome == "passed":
                        survivors.append(mutant)
                        lines.append(
                            f"- {target.path}:{mutant.line} #{mutant.index} {mutant.description}"
                        )
                        print(f"  SURVIVED {target.path}:{mutant.line} {mutant.description}")
                    else:
                        killed += 1
                    sys.stdout.flush()
            finally:
                (copy_root / target.path).write_text(original, encoding="utf-8")
            alive = len(found) - killed
            summary = f"{name}: {len(found)} mutants, {killed} killed, {alive} survived"
            print(summary, flush=True)
            lines.insert(0, summary)
    if report is not None:
        report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    diff = subprocess.run(["git", "diff", "--quiet", "--", "bridge/"], cwd=ROOT, check=False)
    if diff.returncode != 0:
        print("warning: bridge/ differs from HEAD in the worktree (not changed by this run)")
    return 1 if survivors else 0


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)}")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--report", type=Path, help="write the survivors to this file")
    parser.add_argument(
        "--only", nargs="+", type=int, default=[], help="run only the mutants with these numbers"
    )
    parser.add_argument(
        "--tests", nargs="+", default=[], help="run these tests instead of the targets' own"
    )
    args = parser.parse_args()
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    if args.list:
        for name in names:
            for mutant in mutants(name):
                print(f"{TARGETS[name].path}:{mutant.line} #{mutant.index} {mutant.description}")
        return 0
    return run(names, args.report, tuple(args.tests), frozenset(args.only))


if __name__ == "__main__":
    raise SystemExit(main())
