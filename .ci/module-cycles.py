#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

For each crate source root given, every `use crate::...`, `use super::...` and inline `crate::a::b`
path outside `#[cfg(test)]` code is resolved to the module it names, each module is folded into its
top-level module (`pool::scrape` into `pool`), and any cycle among those is reported with its
members. A child importing its own parent is not a circle.
"""
import os
import re
import sys


def modules(root):
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found["::".join(parts)] = path
    return found


def code(path):
    text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def expand(use):
    """`a::{b, c::{d}}` -> [`a::b`, `a::c`] (the first level is enough to name modules)."""
    use = re.sub(r"\s+", "", use)
    brace = use.find("{")
    if brace < 0:
        return [use]
    prefix, inner = use[:brace], use[brace + 1 : -1]
    items, depth, item = [], 0, ""
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    items.append(item)
    return [prefix + i.split("::{")[0] for i in items if i]


def resolve(mods, current, path):
    segments = path.split("::")
    if segments[0] == "crate":
        base, segments = [], segments[1:]
    elif segments[0] in ("super", "self"):
        base = current.split("::") if current else []
        while segments and segments[0] == "super":
            base, segments = base[:-1], segments[1:]
        if segments and segments[0] == "self":
            segments = segments[1:]
    else:
        return None
    for i in range(len(segments), 0, -1):
        candidate = "::".join(base + segments[:i])
        if candidate in mods:
            return candidate
    return "::".join(base) or None


def top_level_edges(mods):
    edges = {}
    for module, path in mods.items():
        text = code(path)
        paths = [p for use in re.findall(r"\buse\s+((?:crate|super|self)\b[^;]*);", text, re.S) for p in expand(use)]
        paths += re.findall(r"\bcrate(?:::[a-z_][a-z0-9_]*)+", text)
        for p in paths:
            target = resolve(mods, module, p)
            if not target or target == module or target.startswith(module + "::") or module.startswith(target + "::"):
                continue
            a, b = module.split("::")[0], target.split("::")[0]
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
    return edges


def cycles(edges):
    def reaches(start):
        seen, stack = set(), [start]
        while stack:
            for w in edges.get(stack.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        return seen

    return sorted(n for n in edges if n in reaches(n))


failed = False
for root in sys.argv[1:]:
    on_cycle = cycles(top_level_edges(modules(root)))
    if on_cycle:
        failed = True
        print(f"{root}: these top-level modules import each other in a circle: {', '.join(on_cycle)}")
    else:
        print(f"{root}: no module circles")
sys.exit(1 if failed else 0)
