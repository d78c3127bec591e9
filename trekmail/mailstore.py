"""
Where each mailbox's mail lives on disk, agreed between delivery (which
writes new mail) and the IMAP server (which reads and indexes it).

Layout: C{DATA_DIR/mail/DOMAIN/LOCAL/} is a Maildir (C{tmp/ new/ cur/})
holding INBOX; other folders are Maildir++ subfolders (C{.Sent/},
C{.Drafts/}, ...) beneath it.
"""

import os


def maildir_path(data_dir, address):
    local, _, domain = address.lower().rpartition("@")
    if not local or not domain or "/" in address or address.startswith(".") or "\0" in address:
        raise ValueError("not a mailbox address: %r" % (address,))
    return os.path.join(data_dir, "mail", domain, local)
