"""
The import graph of C{trekmail/} (docs/design.md, "The layers"): queue and
relay meet only in the delivery contract (L{trekmail.delivery}), and no
module imports, directly or round a circle, one that imports it back.
Every import counts, also one inside a function: it still ties the two
modules together.  Only the wiring imports L{trekmail.config}: the rest
takes values (docs/design.md, "Only the wiring builds things").
"""

import ast
import os

from twisted.trial import unittest

import trekmail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(trekmail.__file__)))


def modules():
    """Every module under C{trekmail/}: its dotted name and its file."""
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "trekmail")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(path, known):
    """The trekmail modules that the file at C{path} imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module + "." + alias.name if node.module + "." + alias.name in known else node.module
                     for alias in node.names]
        else:
            continue
        targets.update(n for n in names if n in known)
    return targets


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def circles(edges):
    """The strongly connected components of more than one module, or with a self-import (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


WIRING = {"trekmail.service", "trekmail.settings", "trekmail.cli", "trekmail.datacli", "trekmail.tap",
          "trekmail.imapchild", "trekmail.config"}
"""The modules that read the configuration: the server's, the CLI's and an IMAP child process's wiring."""


def config_importers(edges):
    """The modules that import L{trekmail.config}."""
    return sorted(name for name, targets in edges.items() if "trekmail.config" in targets)


def config_readers(known):
    """The modules whose code calls C{config.get}, C{config.data_path} or reads C{config.data_dir}."""
    readers = []
    for name, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("get", "data_path", "data_dir", "secret_key_path")
                    and isinstance(node.value, (ast.Name, ast.Attribute))
                    and getattr(node.value, "id", getattr(node.value, "attr", None)) in ("config", "_config")):
                readers.append(name)
                break
    return sorted(readers)


class LayerTests(unittest.TestCase):
    def crossings(self, source, target):
        return sorted(
            (name, imported) for name, targets in graph().items() if name.startswith(source + ".")
            for imported in targets if imported == target or imported.startswith(target + ".")
        )

    def test_queue_does_not_import_relay(self):
        self.assertEqual(self.crossings("trekmail.queue", "trekmail.relay"), [])

    def test_relay_does_not_import_queue(self):
        self.assertEqual(self.crossings("trekmail.relay", "trekmail.queue"), [])

    def test_no_import_circle(self):
        self.assertEqual(circles(graph()), [])

    def test_circles_are_found(self):
        """The check itself sees a circle through three modules, and a self-import."""
        self.assertEqual(circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}),
                         [["a", "b", "c"], ["e"]])

    def test_config_importers_are_found(self):
        self.assertIn("trekmail.service", config_importers(graph()))
        self.assertEqual(config_importers({"a": {"trekmail.config"}, "b": {"a"}}), ["a"])

    def test_only_the_wiring_imports_config(self):
        self.assertEqual(sorted(set(config_importers(graph())) - WIRING), [])

    def test_only_the_wiring_reads_config(self):
        readers = config_readers(modules())
        self.assertIn("trekmail.service", readers, "the check sees the wiring's reads")
        self.assertEqual(sorted(set(readers) - WIRING), [])
