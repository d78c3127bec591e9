"""
The README and the topic pages link only to files that exist (a
newcomer's first clicks), so a renamed or removed file shows up here.
"""

import glob
import os
import re

from twisted.trial import unittest

from tests.support import REPO

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(page):
    """The relative link targets of the Markdown file C{page} that name no file or directory."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    out = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = os.path.join(os.path.dirname(page), target.partition("#")[0])
        if not os.path.exists(path):
            out.append(target)
    return out


class LinkTests(unittest.TestCase):
    def test_every_relative_link_names_a_file(self):
        pages = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
        self.assertGreater(len(pages), 10)
        self.assertEqual({os.path.relpath(p, REPO): broken_links(p) for p in pages if broken_links(p)}, {})

    def test_a_missing_file_is_found(self):
        page = os.path.join(self.mktemp(), "page.md")
        os.makedirs(os.path.dirname(page))
        with open(page, "w") as f:
            f.write("[here](page.md) [web](https://example.com/x) [anchor](#top) [gone](gone.md#part)\n")
        self.assertEqual(broken_links(page), ["gone.md#part"])
