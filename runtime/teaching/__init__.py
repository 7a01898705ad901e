"""Teaching the device: tokenizer, enrolment, class edits, score calibration, the open-set cohort, split lists.

May import: ``base``, ``video``, ``bundle``, ``engines``.
"""
