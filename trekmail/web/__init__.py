"""What the C{https} listener serves besides DAV: client autoconfiguration (and, later, the dashboard)."""
