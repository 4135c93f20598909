"""python -m glassformer"""

from .cli import entry

entry()
