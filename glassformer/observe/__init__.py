"""Observers of a model from outside, through forward hooks: Trace, and the analyses built on it."""
