"""
C{trekmail import}: copies a mailbox from another IMAP server, a Maildir
or an mbox into a TrekMail mailbox, folder by folder, with flags and
INTERNALDATE, resuming where an earlier run stopped.  The sources are in
L{trekmail.admin.importimap} and L{trekmail.admin.importfiles}; how the
copy reaches a running server, and why a rerun never duplicates, in
L{trekmail.admin.importtarget}.
"""

from trekmail.admin.importtarget import Mailbox, TooLarge, target_name


def run(source, data_dir, address, clock, max_size, progress=lambda event: None):
    """
    Copies everything C{source} holds that an earlier run did not; a
    summary per folder.  C{progress} hears of each message copied (tests
    cut a run short through it).
    """
    mailbox = Mailbox(data_dir, address, clock, max_size)
    try:
        plan = [(key, target_name(parts), selectable) for key, parts, selectable in source.folders()]
        for _, target, _ in plan:
            mailbox.ensure_folder(target)
        report = []
        for key, target, selectable in plan:
            if selectable:
                report.append(_copy_folder(source, mailbox, key, target, progress))
        return {"source": source.name, "mailbox": address, "folders": report,
                "copied": sum(f["copied"] for f in report)}
    finally:
        mailbox.close()
        source.close()


def _copy_folder(source, mailbox, key, target, progress):
    folder = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    validity = source.open(key)
    after = mailbox.resume_point(source.name, folder, validity)
    finished = mailbox.finish_staged(target)
    copied, skipped = finished, []
    for position, flags, date, chunks in source.messages(key, after):
        try:
            mailbox.add(source.name, folder, validity, target, position, flags, date, chunks)
        except TooLarge as e:
            skipped.append("%s: %s" % (position, e))
            continue
        copied += 1
        progress({"folder": target, "position": position})
    return {"folder": target, "copied": copied, "skipped": skipped}
