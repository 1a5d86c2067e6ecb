"""Hostile input (issue 9): schema fuzzing, parser fuzzing, bad media, names, slow clients."""
