"""Stage 3: canonical identity fields, each kept beside its original value.

Pure functions over polars frames; library calls that work one value at a time (email-validator,
phonenumbers, jellyfish) run once per distinct value, not once per row.
"""
