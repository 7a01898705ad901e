"""The runtime's ``clipfsar`` subcommands (run, bench, enroll, classes, calibrate-threshold, engine, serve).

May import: every other runtime subpackage; nothing imports it but ``clipfsar.cli``.
"""
