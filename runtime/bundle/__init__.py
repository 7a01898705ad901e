"""The bundle format (its one owner): reader and writer, manifest schema, prototype store, locked edits, class names.

May import: ``clipfsar.runtime.base`` and ``clipfsar.runtime.video`` (the preprocessing facts in the manifest).
"""
