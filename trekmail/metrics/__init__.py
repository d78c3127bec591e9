"""
Prometheus metrics (C{[listen] metrics}): counters fed by the mail log's
events (L{trekmail.metrics.events}), gauges read from the running server
at scrape time (L{trekmail.metrics.gauges}), served in the text
exposition format (L{trekmail.metrics.endpoint}).  docs/metrics.md names
every metric.
"""
