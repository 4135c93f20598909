"""`glassformer explore`: the walkthrough as a live page on this machine. Type a text, edit a weight,
remove a head, and every step recomputes (server.py: the app and its safety; api.py: the answers)."""

from glassformer.explore.api import ApiError, Explorer
from glassformer.explore.server import make_app, serve

__all__ = ["ApiError", "Explorer", "make_app", "serve"]
