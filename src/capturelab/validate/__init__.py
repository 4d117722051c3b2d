"""Validation of a running lab: targets from the inventory, measurements, checks."""
