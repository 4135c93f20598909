"""python -m glassformer"""

from glassformer.cli import entry

entry()
