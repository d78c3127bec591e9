"""
C{trekmail queue list|flush|delete} and C{trekmail suppression
list|remove} against a spool and database on disk.
"""

import io
import json
import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests import support
from trekmail import cli
from trekmail.config import Config
from trekmail.queue import suppression
from trekmail.queue.interface import Envelope
from trekmail.queue.spool import accept_log, recover, write_batch
from trekmail.queue.spoolformat import SpoolLayout, encode
from trekmail.realm import database, schema


class QueueCLITests(unittest.TestCase):
    def setUp(self):
        self.path = support.write_config(self.mktemp())
        self.config = Config.from_file(self.path)
        self.layout = SpoolLayout(self.config.data_path("queue"))
        self.layout.create()

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", self.path] + list(argv), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def spool(self, queue_id, recipients=("b@remote.test",)):
        envelope = Envelope("a@example.com", recipients, "submission", received_at=support.NOON)
        self.assertEqual(write_batch(self.layout, [(queue_id, encode(envelope, b"Subject: x\r\n\r\nhi\r\n"))]), [None])

    def accept(self, queue_id):
        """As a running server accepts it: into the accept log, not a file."""
        envelope = Envelope("a@example.com", ("d@remote.test",), "submission", received_at=support.NOON)
        accept_log(self.layout, Clock().seconds).append([(queue_id, encode(envelope, b"Subject: y\r\n\r\nhi\r\n"))])

    def test_list_and_delete_mail_still_in_the_accept_log(self):
        self.accept("0000000000aa21")
        self.accept("0000000000aa22")
        code, out, _ = self.run_cli("--json", "queue", "list")
        self.assertEqual(code, 0)
        self.assertEqual([(e["queue_id"], e["recipients"]) for e in json.loads(out)],
                         [("0000000000aa21", ["d@remote.test"]), ("0000000000aa22", ["d@remote.test"])])
        self.assertEqual(self.run_cli("queue", "delete", "0000000000aa21")[0], 0)
        self.assertEqual(self.layout.queue_ids(), ["0000000000aa22"])
        self.assertEqual([e[0] for e in recover(self.layout, accept_log(self.layout, Clock().seconds))], ["0000000000aa22"])
        self.assertEqual(self.layout.file_ids(), ["0000000000aa22"])

    def test_list_shows_pending_and_errors(self):
        self.spool("0000000000aa11", ("b@remote.test", "c@remote.test"))
        self.layout.write_state("0000000000aa11", {
            "attempts": 2, "next_at": support.NOON + 600, "pending": ["c@remote.test"],
            "errors": {"c@remote.test": "451 4.2.0 greylisted"},
        })
        code, out, _ = self.run_cli("--json", "queue", "list")
        self.assertEqual(code, 0)
        [entry] = json.loads(out)
        self.assertEqual(entry["queue_id"], "0000000000aa11")
        self.assertEqual(entry["recipients"], ["c@remote.test"])
        self.assertEqual(entry["attempts"], 2)
        self.assertEqual(entry["next_attempt"], "2026-11-21T12:10:00+00:00")
        self.assertIn("451 4.2.0 greylisted", entry["last_error"])

    def test_delete_and_unknown_id(self):
        self.spool("0000000000aa12")
        self.assertEqual(self.run_cli("queue", "delete", "0000000000aa12")[0], 0)
        self.assertEqual(self.layout.queue_ids(), [])
        code, _, err = self.run_cli("queue", "delete", "0000000000aa12")
        self.assertEqual(code, 1)
        self.assertIn("no queued message", err)
        code, _, err = self.run_cli("queue", "delete", "../etc/passwd")
        self.assertEqual(code, 1)
        self.assertIn("not a queue id", err)

    def test_flush_leaves_a_request(self):
        code, out, _ = self.run_cli("queue", "flush")
        self.assertEqual(code, 0)
        self.assertTrue(os.path.exists(os.path.join(self.layout.control, "flush")))

    def test_suppression_list_and_remove(self):
        db = database.connect(self.config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        for _ in range(3):
            suppression.record_hard_bounce(db, "example.com", "gone@remote.test", support.NOON, "550 5.1.1 unknown", 3)
        suppression.record_hard_bounce(db, "example.com", "once@remote.test", support.NOON, "550 5.1.1 unknown", 3)
        db.close()
        code, out, _ = self.run_cli("--json", "suppression", "list")
        self.assertEqual(code, 0)
        self.assertEqual([(e["address"], e["hard_bounces"]) for e in json.loads(out)], [("gone@remote.test", 3)])
        self.assertEqual(self.run_cli("suppression", "remove", "gone@remote.test")[0], 0)
        self.assertEqual(json.loads(self.run_cli("--json", "suppression", "list")[1]), [])
        code, _, err = self.run_cli("suppression", "remove", "gone@remote.test")
        self.assertEqual(code, 1)
        self.assertIn("not on the suppression list", err)
