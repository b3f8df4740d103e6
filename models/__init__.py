"""Bundled model bundles, one folder each (package data)."""
