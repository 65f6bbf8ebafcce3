"""Applies the planner's decisions to the tree: uses are swapped for their fulmen spelling,
and each Lightning import statement is rebuilt from its bindings plus the fulmen modules its
uses need. An import that maps to one module is edited in place (its parentheses, comments
and commas survive); one that must be split becomes several statements on the same line,
so no line number moves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple, Union

import libcst as cst

from fulmen.migrate import names
from fulmen.migrate.names import Target

if TYPE_CHECKING:  # pragma: no cover
    from fulmen.migrate.rewriter import _Binding, _BindingCollector, _Planner

_Piece = Tuple[str, Optional[str], cst.ImportAlias]  # ("from", module, alias) or ("import", None, alias)


def _expr(dotted: str) -> Union[cst.Name, cst.Attribute]:
    return cst.parse_expression(dotted)  # type: ignore[return-value]


def _as(alias: cst.ImportAlias, bound: Optional[str]) -> Optional[cst.AsName]:
    """``as bound`` (keeping the original's spacing when it had one), or None for no alias."""
    if bound is None:
        return None
    if alias.asname is not None:
        return alias.asname.with_changes(name=cst.Name(bound))
    return cst.AsName(name=cst.Name(bound))


def _with_commas(aliases: Sequence[cst.ImportAlias], trailing_allowed: bool) -> List[cst.ImportAlias]:
    out = []
    for index, alias in enumerate(aliases):
        if index < len(aliases) - 1:
            comma = alias.comma if isinstance(alias.comma, cst.Comma) else cst.Comma(
                whitespace_after=cst.SimpleWhitespace(" "))
        else:
            comma = alias.comma if trailing_allowed else cst.MaybeSentinel.DEFAULT
        out.append(alias.with_changes(comma=comma))
    return out


class ImportRewriter(cst.CSTTransformer):
    def __init__(self, collector: "_BindingCollector", planner: "_Planner") -> None:
        super().__init__()
        self.by_alias: Dict[cst.ImportAlias, "_Binding"] = {b.alias: b for b in collector.order}
        self.top_level: Dict[cst.CSTNode, bool] = {b.statement: b.top_level for b in collector.order}
        self.stars = set(collector.stars)
        self.replacements = planner.replacements
        self.extras = planner.extras
        self.imported: Set[str] = set(collector.imported)

    # -- uses ---------------------------------------------------------------------------
    def _swap(self, original: cst.BaseExpression, updated: cst.BaseExpression) -> cst.BaseExpression:
        new = self.replacements.get(original)
        if new is None:
            return updated
        return new.with_changes(lpar=updated.lpar, rpar=updated.rpar)

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self._swap(original_node, updated_node)

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute) -> cst.BaseExpression:
        return self._swap(original_node, updated_node)

    # -- imports ------------------------------------------------------------------------
    def _extra_pieces(self, statement: cst.CSTNode, also: Sequence[str] = ()) -> List[_Piece]:
        """``import M`` for each module the statement's uses need, unless the file already
        imports it (or a submodule of it) at module level."""
        top = self.top_level.get(statement, False)
        pieces: List[_Piece] = []
        seen: Set[str] = set()
        for module in list(self.extras.get(statement, ())) + list(also):
            covered = module in seen or (top and any(i == module or i.startswith(module + ".") for i in self.imported))
            if covered:
                continue
            seen.add(module)
            if top and not names.is_lightning(module):
                self.imported.add(module)
            pieces.append(("import", None, cst.ImportAlias(name=_expr(module))))
        return pieces

    def leave_Import(self, original_node: cst.Import, updated_node: cst.Import):
        if not any(alias in self.by_alias for alias in original_node.names):
            return updated_node
        aliases: List[cst.ImportAlias] = []
        unused_targets: List[str] = []
        for alias in original_node.names:
            binding = self.by_alias.get(alias)
            if binding is None:
                aliases.append(alias)
            elif binding.kind == "module":
                aliases.append(alias.with_changes(name=_expr(binding.entry)))
            elif binding.keep_original or (not binding.used and not isinstance(binding.entry, str)):
                aliases.append(alias)
            elif not binding.used:  # `import lightning` with no uses: still import fulmen
                unused_targets.append(binding.entry)
        aliases += [piece[2] for piece in self._extra_pieces(original_node, unused_targets)]
        if not aliases:  # all it needs is imported elsewhere; import it here too, so no line goes
            needed = list(self.extras.get(original_node, ())) or unused_targets or ["fulmen"]
            aliases = [cst.ImportAlias(name=_expr(needed[0]))]
        return updated_node.with_changes(names=_with_commas(aliases, trailing_allowed=False))

    def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom):
        if original_node in self.stars:
            entry = names.lookup(names.canonical(_module_name(original_node)))
            return updated_node.with_changes(module=_expr(entry)) if isinstance(entry, str) else updated_node
        if isinstance(original_node.names, cst.ImportStar) or not any(
                alias in self.by_alias for alias in original_node.names):
            return updated_node
        module = _module_name(original_node)
        pieces: List[_Piece] = []
        for alias in original_node.names:
            piece = self._from_piece(self.by_alias[alias], alias, module)
            if piece is not None:
                pieces.append(piece)
        pieces += self._extra_pieces(original_node)
        groups = _group(pieces) or [("import", None, [cst.ImportAlias(name=_expr(
            (list(self.extras.get(original_node, ())) or ["fulmen"])[0]))])]
        if len(groups) == 1 and groups[0][0] == "from":
            _, target, aliases = groups[0]
            parenthesized = updated_node.lpar is not None
            return updated_node.with_changes(module=_expr(target), names=_with_commas(aliases, parenthesized))
        statements = []
        for index, (kind, target, aliases) in enumerate(groups):
            if index == 0 and kind == "from" and updated_node.lpar is not None:
                # the first group keeps the parentheses, and with them the layout and comments
                statements.append(updated_node.with_changes(module=_expr(target), names=_with_commas(aliases, True)))
                continue
            fixed = _with_commas([a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in aliases], False)
            if kind == "from":
                statements.append(cst.ImportFrom(module=_expr(target), names=fixed))
            else:
                statements.append(cst.Import(names=fixed))
        return cst.FlattenSentinel(statements)

    def _from_piece(self, binding: "_Binding", alias: cst.ImportAlias, module: str) -> Optional[_Piece]:
        if binding.kind == "name":
            if not isinstance(binding.entry, Target):
                return ("from", module, alias)
            new = binding.entry.name
            bound = None if binding.new_name == new else binding.new_name
            return ("from", binding.entry.module, alias.with_changes(name=cst.Name(new), asname=_as(alias, bound)))
        if binding.kind == "module":
            parent, _, last = binding.entry.rpartition(".")
            if not parent:
                return ("import", None, cst.ImportAlias(name=cst.Name(last), asname=_as(alias, binding.bound)))
            bound = None if binding.bound == last else binding.bound
            return ("from", parent, alias.with_changes(name=cst.Name(last), asname=_as(alias, bound)))
        if binding.keep_original or not binding.used:
            return ("from", module, alias)
        return None  # every use now has a fulmen path


def dotted_name(node: cst.BaseExpression) -> str:
    """``a.b.c`` for a Name/Attribute chain (an import's module or alias)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{dotted_name(node.value)}.{node.attr.value}"
    raise TypeError(f"not a dotted name: {node!r}")


def _module_name(node: cst.ImportFrom) -> str:
    return dotted_name(node.module)


def _group(pieces: List[_Piece]) -> List[Tuple[str, Optional[str], List[cst.ImportAlias]]]:
    """Consecutive pieces of one statement kind and module, merged; fulmen imports first,
    then what stays with Lightning, each in source order."""
    ordered = [p for p in pieces if not (p[1] and names.is_lightning(p[1]))] + \
              [p for p in pieces if p[1] and names.is_lightning(p[1])]
    groups: List[Tuple[str, Optional[str], List[cst.ImportAlias]]] = []
    for kind, module, alias in ordered:
        for group in groups:
            if group[0] == kind and group[1] == module:
                group[2].append(alias)
                break
        else:
            groups.append((kind, module, [alias]))
    return groups
