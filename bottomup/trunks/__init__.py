"""Trunks (feature extractors) shared by every grouping head."""
