"""INT8 calibration and the report of what precision costs (not implemented yet)."""
