"""
Checks on mail arriving at the MX: who sent it (SPF, DKIM, DMARC, ARC)
and what to do with it; L{trekmail.inbound.verdicts} is the entry point.
"""
