"""Checks of a running lab: the smoke tests and their reports."""
