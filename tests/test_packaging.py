"""
The install bench/README.md documents, C{pip install -e .} in pip's
default editable mode, gives a C{twistd} that knows the trekmail plugin.

twistd finds plugins by scanning every C{sys.path} entry for a
C{twisted/plugins/} directory.  An editable install that maps packages
with an import hook (setuptools' "top-level finder") puts no such entry
on C{sys.path}, so the dropin is invisible ("Unknown command:
trekmail"); one that adds the project directory with a C{.pth} file
(setuptools' "static pth") makes it visible.  Which of the two pip gets
is setuptools' choice from the packaging metadata: this asks setuptools
for that choice, offline, on a copy of the project (a real install would
need the C{wheel} package, which the suite's venv lacks).
"""

import os
import shutil
import subprocess
import sys

from twisted.trial import unittest

from tests.support import REPO

STRATEGY = """
from setuptools.dist import Distribution
dist = Distribution()
dist.parse_config_files()
command = dist.get_command_obj("editable_wheel")
command.ensure_finalized()
strategy = command._select_strategy("trekmail", "0.1.0", "build/lib")
print(type(strategy).__name__)
for entry in getattr(strategy, "path_entries", []):
    print(entry)
"""


class EditableInstallTests(unittest.TestCase):
    def copy(self):
        source = os.path.abspath(self.mktemp())
        os.makedirs(source)
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy(os.path.join(REPO, name), source)
        for name in ("trekmail", "twisted"):
            shutil.copytree(os.path.join(REPO, name), os.path.join(source, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        return source

    def run_python(self, code, cwd):
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                              env=clean, timeout=120)

    def test_editable_install_adds_the_project_directory(self):
        source = self.copy()
        chosen = self.run_python(STRATEGY, source)
        lines = chosen.stdout.split()
        self.assertEqual(lines[0], "_StaticPth", chosen.stdout + chosen.stderr)
        self.assertEqual([os.path.realpath(os.path.join(source, p)) for p in lines[1:]], [os.path.realpath(source)])
        self.assertTrue(os.path.exists(os.path.join(source, "twisted", "plugins", "trekmail_plugin.py")))


class TestScriptTests(unittest.TestCase):
    """bin/test, run without root on a machine lacking a Debian package, says which instead of failing in a test."""

    def test_missing_packages_are_named_without_root(self):
        fakes = os.path.abspath(self.mktemp())
        os.makedirs(fakes)
        for name, body in (("dpkg", 'case "$2" in slapd) exit 1;; *) exit 0;; esac'), ("id", "echo 1000")):
            path = os.path.join(fakes, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n%s\n" % (body,))
            os.chmod(path, 0o755)
        env = dict(os.environ, PATH=fakes + os.pathsep + os.environ["PATH"])
        done = subprocess.run(["bash", os.path.join(REPO, "bin", "test")], capture_output=True, text=True,
                              env=env, timeout=60)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn("need these Debian packages: slapd", done.stderr)
        self.assertIn("sudo apt-get install slapd", done.stderr)
        self.assertEqual(done.stdout, "")
