"""Rewrite one Lightning program's imports and names to fulmen's, on libcst's concrete syntax
tree, so every comment, blank line and odd spacing outside the rewritten names survives.

The strategy, per import form (``names.py`` says what each Lightning name becomes):

* ``from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar as Bar``: each
  name is imported from its fulmen module (``from fulmen.callbacks import ModelCheckpoint,
  ProgressBar as Bar``). A name fulmen calls differently (``LightningModule`` -> ``Module``)
  is renamed at every use, unless that name is already taken in the file, is a builtin, or
  the old name also appears in a string (an annotation, ``__all__``); then the import keeps
  the old name as its alias (``from fulmen import Module as LightningModule``).
* ``import lightning as L``, ``import lightning.pytorch.callbacks as cb``, ``from lightning
  import pytorch as pl``: the alias is kept and rebound to the matching fulmen module
  (``import fulmen as L``). Each ``L.x.y`` chain is rewritten to its target, under the alias
  when the target lives in that fulmen module or below it (``L.callbacks.ModelCheckpoint``),
  otherwise by its full path (``fulmen_loggers.TensorBoardLogger``). Every fulmen module a
  chain reaches below or beside the alias is imported by name on the same statement
  (``import fulmen as L, fulmen.callbacks``), so no chain depends on lazy attributes.
* ``import lightning`` / ``import pytorch_lightning`` (no alias): chains are rewritten to full
  fulmen paths, and the import becomes the fulmen modules they need.
* Names with no fulmen equivalent are reported and keep working against Lightning where it
  is installed: their imports stay, and a chain under a rebound alias is spelled out from
  the original Lightning module (``L.pytorch.tuner.Tuner`` -> ``lightning.pytorch.tuner.Tuner``,
  with ``import lightning`` kept on the import line).

Nothing else changes: call arguments, strings, attribute accesses past a mapped name
(``ModelCheckpoint.CHECKPOINT_NAME_LAST``) and every non-Lightning line stay as written.
Rewrites add no lines (an import split into fulmen and Lightning parts becomes ``a; b`` on
its line), so line numbers hold before and after, except below a parenthesized multi-line
import that loses a name to its Lightning part; ``Migration.findings_after`` gives the
positions in the rewritten file. A second run finds nothing
to do: the output has no mapped Lightning names left.
"""

from __future__ import annotations

import builtins
import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Set, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider, QualifiedNameSource, ScopeProvider

from fulmen.migrate import names
from fulmen.migrate.imports import ImportRewriter, dotted_name
from fulmen.migrate.names import NoEquivalent, Target

UNKNOWN_ADVICE = ("not in fulmen's name table: find the fulmen equivalent in "
                  "docs/migrating-from-lightning.md, or keep Lightning installed for this line")


@dataclass(frozen=True)
class Finding:
    """A Lightning name the rewrite left for a human: where, which, and what to do instead."""

    line: int
    column: int
    name: str
    advice: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}:{self.column}: {self.name} — {self.advice}"


@dataclass
class Migration:
    """The rewritten source and the findings, in source order."""

    original: str
    code: str
    findings: List[Finding]

    @property
    def changed(self) -> bool:
        return self.code != self.original

    def findings_after(self) -> List[Finding]:
        """The findings with positions in the rewritten code (the same names: what is left
        for a human is left as it was). They differ from ``findings`` only below a
        parenthesized import that had to be split into fulmen and Lightning parts."""
        return migrate_source(self.code).findings if self.changed else self.findings


@lru_cache(maxsize=None)
def _importable(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def resolve(name: str) -> Optional[Union[Target, NoEquivalent, str]]:
    """The table entry for a dotted Lightning name, with a pending target that does not
    import yet turned into its advice (mapping to it would break the program)."""
    entry = names.lookup(names.canonical(name))
    if isinstance(entry, Target) and entry.pending and not _importable(entry.module, entry.name):
        return NoEquivalent(f"{entry.dotted} is not in this fulmen yet: {entry.advice}")
    return entry


@dataclass(eq=False)
class _Binding:
    """One name a Lightning import binds. ``kind`` is "name" (a class or function from the
    table), "module" (a module alias fulmen can rebind, ``base`` its fulmen module) or "path"
    (an unaliased ``import lightning...`` or a module fulmen does not know: uses get full
    paths)."""

    statement: Union[cst.Import, cst.ImportFrom]
    alias: cst.ImportAlias
    bound: str
    lightning: str  # the dotted Lightning name as the program spelled it
    kind: str
    entry: Optional[Union[Target, NoEquivalent, str]]
    top_level: bool
    new_name: Optional[str] = None  # "name" bindings: the name uses are renamed to
    keep_original: bool = False  # an unmapped use still needs the Lightning import
    used: bool = False


def _chain(node: cst.BaseExpression) -> List[cst.BaseExpression]:
    """[root Name, ..., node] of an attribute chain, or [] when it does not start at a name."""
    links = []
    while isinstance(node, cst.Attribute):
        links.append(node)
        node = node.value
    if not isinstance(node, cst.Name):
        return []
    links.append(node)
    return links[::-1]


class _Planner(cst.CSTVisitor):
    """Decides every change on the original tree (bindings first, then uses), so import
    statements can be rewritten knowing what the code after them needs."""

    METADATA_DEPENDENCIES = (QualifiedNameProvider, ScopeProvider, PositionProvider)

    def __init__(self, bindings: Dict[str, List[_Binding]]) -> None:
        super().__init__()
        self.bindings = bindings
        self.replacements: Dict[cst.CSTNode, cst.BaseExpression] = {}
        self.extras: Dict[cst.CSTNode, List[str]] = {}  # statement -> modules to import on it
        self.findings: List[Finding] = []

    # imports were collected beforehand; their names are not uses
    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return self._use(node)

    def visit_Name(self, node: cst.Name) -> bool:
        return self._use(node)

    def _qualname(self, node: cst.CSTNode) -> Optional[str]:
        found = sorted(q.name for q in self.get_metadata(QualifiedNameProvider, node, set())
                       if q.source is QualifiedNameSource.IMPORT and names.is_lightning(q.name))
        return found[0] if found else None

    def report(self, node: cst.CSTNode, name: str, advice: str) -> None:
        start = self.get_metadata(PositionProvider, node).start
        self.findings.append(Finding(start.line, start.column + 1, names.canonical(name), advice))

    def _binding_for(self, root: cst.Name, qualname: str) -> Optional[_Binding]:
        for binding in self.bindings.get(root.value, ()):
            if qualname == binding.lightning or qualname.startswith(binding.lightning + ".") \
                    or binding.kind == "path":
                return binding
        return None

    def _use(self, node: Union[cst.Name, cst.Attribute]) -> bool:
        qualname = self._qualname(node)
        links = _chain(node) if qualname else []
        binding = self._binding_for(links[0], qualname) if links else None
        if binding is None:
            return True  # not Lightning, or an outer link whose inner part is (descend to it)
        binding.used = True
        link, entry = None, None
        for candidate in links:
            found = resolve(self._qualname(candidate) or "")
            if isinstance(found, (Target, NoEquivalent)):
                link, entry = candidate, found
                break
        if link is None:  # a module reference (or an unknown name): the deepest known module
            known = [c for c in links if isinstance(resolve(self._qualname(c) or ""), str)]
            if known and known[-1] is node:
                link, entry = node, resolve(qualname)
                if link is links[0]:
                    return False  # the bound alias itself: rebinding the import is enough
            else:
                link = links[len(known)] if len(known) < len(links) else node
                entry = NoEquivalent(UNKNOWN_ADVICE)
        if isinstance(entry, NoEquivalent):
            named = link
            if names.canonical(self._qualname(link) or "") in names.MODULES and link is not node:
                named = links[links.index(link) + 1]  # name what the program reaches for in it
            self.report(named, self._qualname(named) or qualname, entry.advice)
            self._keep_lightning(binding, links[0])
        else:
            self._map(binding, link, entry)
        return False

    def _keep_lightning(self, binding: _Binding, root: cst.Name) -> None:
        if binding.kind == "module":  # the alias now means fulmen: spell the Lightning path out
            self.replacements[root] = cst.parse_expression(binding.lightning)
            self._need(binding, binding.lightning)
        elif binding.kind == "path":
            binding.keep_original = True

    def _map(self, binding: _Binding, link: cst.BaseExpression, entry: Union[Target, str]) -> None:
        if isinstance(entry, str):  # the top-level fulmen module itself
            dotted, module = entry, entry
        else:
            dotted, module = entry.dotted, entry.module
        if binding.kind == "name":
            if binding.new_name and binding.new_name != binding.bound:
                self.replacements[link] = cst.Name(binding.new_name)
            return
        if binding.kind == "module":
            base = binding.entry
            if dotted == base or dotted.startswith(base + "."):
                dotted = binding.bound + dotted[len(base):]
                if module != base:
                    self._need(binding, module)
            else:
                self._need(binding, module)
        else:
            self._need(binding, module)
        if dotted_name(link) != dotted:
            self.replacements[link] = cst.parse_expression(dotted)

    def _need(self, binding: _Binding, module: str) -> None:
        needed = self.extras.setdefault(binding.statement, [])
        if module not in needed:
            needed.append(module)


class _BindingCollector(cst.CSTVisitor):
    """Every name bound by a Lightning import (at any depth), and which modules the file
    already imports at module level (so a needed ``import fulmen.callbacks`` is added once)."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.bindings: Dict[str, List[_Binding]] = {}
        self.order: List[_Binding] = []
        self.stars: List[cst.ImportFrom] = []
        self.imported: Set[str] = set()
        self._depth = 0

    def visit_FunctionDef(self, node) -> None:
        self._depth += 1

    def leave_FunctionDef(self, node) -> None:
        self._depth -= 1

    visit_ClassDef, leave_ClassDef = visit_FunctionDef, leave_FunctionDef

    def _add(self, binding: _Binding) -> None:
        self.bindings.setdefault(binding.bound, []).append(binding)
        self.order.append(binding)

    def visit_Import(self, node: cst.Import) -> bool:
        for alias in node.names:
            dotted = dotted_name(alias.name)
            if not names.is_lightning(dotted):
                if self._depth == 0 and alias.asname is None:
                    self.imported.add(dotted)
                continue
            entry = resolve(dotted)
            if alias.asname is not None:
                bound = alias.asname.name.value
                kind = "module" if isinstance(entry, str) else "path"
            else:
                bound, kind = dotted.partition(".")[0], "path"
            self._add(_Binding(node, alias, bound, dotted, kind, entry, self._depth == 0))
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        if node.relative or node.module is None or not names.is_lightning(dotted_name(node.module)):
            return False
        module = dotted_name(node.module)
        if isinstance(node.names, cst.ImportStar):
            self.stars.append(node)
            return False
        for alias in node.names:
            name = dotted_name(alias.name)
            bound = alias.asname.name.value if alias.asname is not None else name
            full = f"{module}.{name}"
            entry = resolve(full)
            kind = "module" if isinstance(entry, str) else "name" if entry is not None else "path"
            self._add(_Binding(node, alias, bound, full, kind, entry, self._depth == 0))
        return False


def _taken_names(wrapper: MetadataWrapper) -> Set[str]:
    """Every name assigned anywhere in the file, plus the builtins: a rename must not land on one."""
    taken = set(dir(builtins))
    for scope in set(wrapper.resolve(ScopeProvider).values()):
        if scope is not None:
            taken.update(assignment.name for assignment in scope.assignments)
    return taken


def _string_values(module: cst.Module) -> Set[str]:
    """Identifiers named in strings without whitespace (string annotations, ``__all__``
    entries): renaming a name they mention would break them. Prose (docstrings) is ignored."""
    found: Set[str] = set()

    class _Strings(cst.CSTVisitor):
        def visit_SimpleString(self, node: cst.SimpleString) -> None:
            try:
                found.add(node.evaluated_value if isinstance(node.evaluated_value, str) else "")
            except Exception:  # an odd literal; it cannot name anything
                pass

    module.visit(_Strings())
    return {word for text in found if not any(c.isspace() for c in text.strip())
            for word in re.findall(r"\w+", text)}


def _choose_names(collector: _BindingCollector, taken: Set[str], strings: Set[str]) -> None:
    """Fix each name binding's new name: the fulmen name where that is safe, else the old one."""
    claimed: Set[str] = set()
    for binding in collector.order:
        if binding.kind != "name" or not isinstance(binding.entry, Target):
            continue
        if binding.alias.asname is not None:
            binding.new_name = binding.bound
            continue
        new = binding.entry.name
        safe = new == binding.bound or (new not in taken and new not in claimed and binding.bound not in strings)
        binding.new_name = new if safe else binding.bound
        claimed.add(binding.new_name)


def migrate_source(code: str) -> Migration:
    """Rewrite one module's source; raises ``libcst.ParserSyntaxError`` if it does not parse."""
    module = cst.parse_module(code)
    wrapper = MetadataWrapper(module)
    collector = _BindingCollector()
    wrapper.visit(collector)
    if not collector.order and not collector.stars:
        return Migration(code, code, [])
    _choose_names(collector, _taken_names(wrapper), _string_values(wrapper.module))
    planner = _Planner(collector.bindings)
    wrapper.visit(planner)
    rewriter = ImportRewriter(collector, planner)
    positions = wrapper.resolve(PositionProvider)
    findings = list(planner.findings)
    for binding in collector.order:
        if isinstance(binding.entry, NoEquivalent) or (binding.kind == "path" and binding.entry is None
                                                       and not binding.used):
            advice = binding.entry.advice if isinstance(binding.entry, NoEquivalent) else UNKNOWN_ADVICE
            start = positions[binding.alias].start
            findings.append(Finding(start.line, start.column + 1, names.canonical(binding.lightning), advice))
    for star in collector.stars:
        start = positions[star].start
        findings.append(Finding(start.line, start.column + 1, names.canonical(dotted_name(star.module)) + ".*",
                                "a star import hides which names the program uses: import them by name "
                                "and run fulmen migrate again"))
    findings = sorted(set(findings), key=lambda f: (f.line, f.column, f.name))
    new_code = wrapper.module.visit(rewriter).code
    return Migration(code, new_code, findings)
