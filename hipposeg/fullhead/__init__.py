"""Whole-head scans: register to the ICBM152 template, crop both hippocampi, segment, map back."""
