"""Semantic class distance: path length between classes in a class hierarchy.

A hierarchy is a tree whose leaves are class names; the distance between two
classes is the number of edges on the path between their leaves through the
lowest common ancestor (every tree hangs under one implicit root, so two
classes in different top-level groups are ``depth_a + depth_b`` apart).

Hierarchies are JSON files in one of two forms:

- nested: keys are group names, values are nested objects or lists of leaf
  class names::

      {"animal": {"mammal": ["cat", "dog"], "bird": ["bird"]},
       "vehicle": ["automobile", "truck"]}

  A group may share its name with a leaf (``"bird": ["bird"]``) or with a
  group in another branch: groups are identified by their path.
- parent map: ``{"parents": {"cat": "mammal", "mammal": "animal",
  "animal": null}}``; nodes without a parent (null, or never listed as a
  key) hang under the implicit root; leaves are the nodes that are nobody's
  parent.

Built-in hierarchies ship in ``labelflip/similarity/hierarchies/``
(``cifar10``, ``fashion-mnist``). **Their groupings are labelflip's own**
(animals vs vehicles, clothing vs footwear, ...), not taxonomies published
by the datasets' authors; pass your own file to use another.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from labelflip._files import read_user_text
from labelflip.errors import LabelflipError
from labelflip.similarity._matrix import ClassDistance

_BUILTIN_PACKAGE = "labelflip.similarity"
_BUILTIN_DIR = "hierarchies"


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """A class hierarchy: every leaf with the path of groups above it.

    ``paths[leaf]`` lists the groups from the top level down to the leaf's
    parent (empty for a leaf directly under the implicit root). This form
    represents both file formats, including groups that share a name with a
    leaf. ``name`` is the built-in name or the file stem; ``source`` is
    ``builtin:<name>`` or the file path.
    """

    name: str
    source: str
    paths: Mapping[str, tuple[str, ...]]

    @property
    def leaves(self) -> tuple[str, ...]:
        """Leaf class names, in file order."""
        return tuple(self.paths)

    @property
    def depth(self) -> int:
        """Edges from the implicit root to the deepest leaf."""
        return max(len(p) for p in self.paths.values()) + 1


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def builtin_hierarchies() -> list[str]:
    """Names of the hierarchies shipped with labelflip."""
    folder = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _parse(text: str, where: str) -> dict[str, tuple[str, ...]]:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise LabelflipError(f"hierarchy {where}: key '{exc.args[0]}' appears twice") from None
    except json.JSONDecodeError as exc:
        raise LabelflipError(
            f"hierarchy {where} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from None
    if not isinstance(data, dict) or not data:
        raise LabelflipError(
            f"hierarchy {where} must be a non-empty JSON object (nested groups, "
            'or {"parents": {...}})'
        )
    if set(data) == {"parents"}:
        paths = _from_parents(data["parents"], where)
    else:
        paths = {}
        _from_nested(data, (), paths, where)
    if not paths:
        raise LabelflipError(f"hierarchy {where} has no leaf classes")
    return paths


def _from_nested(
    node: dict[str, Any], path: tuple[str, ...], out: dict[str, tuple[str, ...]], where: str
) -> None:
    for group, value in node.items():
        here = (*path, group)
        label = " > ".join(here)
        if not group:
            raise LabelflipError(f"hierarchy {where}: empty group name under '{' > '.join(path)}'")
        if isinstance(value, dict):
            if not value:
                raise LabelflipError(f"hierarchy {where}: group '{label}' is empty")
            _from_nested(value, here, out, where)
        elif isinstance(value, list):
            if not value:
                raise LabelflipError(f"hierarchy {where}: group '{label}' is empty")
            for leaf in value:
                if not isinstance(leaf, str) or not leaf:
                    raise LabelflipError(
                        f"hierarchy {where}: group '{label}' lists {leaf!r}; "
                        "leaves must be non-empty class-name strings"
                    )
                if leaf in out:
                    raise LabelflipError(
                        f"hierarchy {where}: leaf '{leaf}' is listed twice "
                        f"(under '{' > '.join(out[leaf])}' and '{label}')"
                    )
                out[leaf] = here
        else:
            raise LabelflipError(
                f"hierarchy {where}: group '{label}' must be an object or a list of class "
                f"names, got {type(value).__name__}"
            )


def _from_parents(parents: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(parents, dict) or not parents:
        raise LabelflipError(f"hierarchy {where}: 'parents' must be a non-empty object")
    for node, parent in parents.items():
        if not node:
            raise LabelflipError(f"hierarchy {where}: empty node name in 'parents'")
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise LabelflipError(
                f"hierarchy {where}: parent of '{node}' must be a node name or null, got {parent!r}"
            )
    for node in parents:
        seen: set[str] = set()
        current: str | None = node
        while current is not None:
            if current in seen:
                raise LabelflipError(
                    f"hierarchy {where}: cycle through '{current}' (parents form a loop)"
                )
            seen.add(current)
            current = parents.get(current)
    is_parent = {p for p in parents.values() if p is not None}
    out: dict[str, tuple[str, ...]] = {}
    for node in parents:  # a node that is not a key is somebody's parent, not a leaf
        if node in is_parent:
            continue
        chain: list[str] = []
        current = parents[node]
        while current is not None:
            chain.append(current)
            current = parents.get(current)
        out[node] = tuple(reversed(chain))
    return out


def load_hierarchy(source: str | Path) -> Hierarchy:
    """A hierarchy from a built-in name (:func:`builtin_hierarchies`) or a JSON file.

    A string that names a built-in hierarchy loads it (write ``./name`` for a
    file of the same name); any other string or :class:`~pathlib.Path` is a
    file path. Unknown names, missing or malformed files, leaves listed
    twice and cycles raise :class:`LabelflipError`.
    """
    builtins = builtin_hierarchies()
    if isinstance(source, str) and source in builtins:
        res = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR, f"{source}.json")
        text = res.read_text(encoding="utf-8")
        paths = _parse(text, f"'{source}'")
        return Hierarchy(source, f"builtin:{source}", MappingProxyType(paths))
    path = Path(source)
    if isinstance(source, str) and not _looks_like_path(source):
        close = difflib.get_close_matches(source, builtins, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LabelflipError(
            f"unknown hierarchy '{source}'{hint} (built-in: {', '.join(builtins)}; "
            "or give the path of a JSON file)"
        )
    text = read_user_text(path, "hierarchy file")
    paths = _parse(text, f"file '{path}'")
    return Hierarchy(path.stem, str(path), MappingProxyType(paths))


def _looks_like_path(source: str) -> bool:
    return "/" in source or "\\" in source or source.endswith(".json") or Path(source).exists()


def builtin_hierarchy_for(class_names: Sequence[str]) -> str | None:
    """The built-in hierarchy whose leaves are exactly ``set(class_names)``, else None."""
    wanted = {str(c) for c in class_names}
    for name in builtin_hierarchies():
        if set(load_hierarchy(name).leaves) == wanted:
            return name
    return None


def tree_distance(h: Hierarchy, class_names: Sequence[str]) -> np.ndarray:
    """``(k, k)`` float64 matrix of edge counts between the classes' leaves.

    ``d(a, b) = depth(a) + depth(b) - 2 * depth(lca(a, b))``, depths counted
    from the implicit root; 0 on the diagonal.
    """
    names = [str(c) for c in class_names]
    missing = [c for c in names if c not in h.paths]
    if missing:
        close = difflib.get_close_matches(missing[0], list(h.paths), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LabelflipError(
            f"class '{missing[0]}' is not a leaf of hierarchy '{h.name}'{hint} "
            f"(leaves: {', '.join(h.leaves)})"
        )
    paths = [h.paths[c] for c in names]
    k = len(names)
    d = np.zeros((k, k), dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = paths[i], paths[j]
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if names[i] != names[j]:
                d[i, j] = d[j, i] = (len(a) + 1) + (len(b) + 1) - 2 * common
    return d


def top_groups(h: Hierarchy, class_names: Sequence[str]) -> tuple[str, ...]:
    """Each class's top-level group in ``h`` (``animal``, ``vehicle``); a leaf
    directly under the implicit root is its own group. Every name must be a
    leaf of ``h``."""
    missing = [str(c) for c in class_names if str(c) not in h.paths]
    if missing:
        raise LabelflipError(f"hierarchy {h.source} has no class {missing[0]!r}")
    return tuple(h.paths[str(c)][0] if h.paths[str(c)] else str(c) for c in class_names)


def semantic_distance(source: str | Path | Hierarchy, class_names: Sequence[str]) -> ClassDistance:
    """Tree distance (:func:`tree_distance`) as a :class:`ClassDistance` named
    "semantic"; its info names the hierarchy and each class's top-level group
    (:func:`top_groups`, for the report's within-group flips)."""
    h = source if isinstance(source, Hierarchy) else load_hierarchy(source)
    matrix = tree_distance(h, class_names)
    info = {
        "hierarchy": h.name,
        "source": h.source,
        "depth": h.depth,
        "groups": list(top_groups(h, class_names)),
    }
    return ClassDistance("semantic", matrix, tuple(str(c) for c in class_names), info)
