"""Blob storage for the archive: backends behind one protocol, streaming envelope encryption, keys.

This package imports nothing else of the project's (see DESIGN.md, "the direction of imports").
"""
