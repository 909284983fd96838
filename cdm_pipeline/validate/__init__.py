"""Stage 2: check each landed row against its source's pandera contract.

Valid rows go to ``staging.<source>`` typed; failing rows go to ``quarantine.rejected_rows`` with
every failed check. Nothing is dropped: per file, raw rows = staged rows + quarantined rows.
"""
