"""Renderers of the walkthrough data: the terminal, the HTML page, notebooks, the analysis views.

They draw; they compute none of the math."""
