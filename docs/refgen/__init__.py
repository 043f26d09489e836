"""Generators of the reference pages, one module per page; docs/reference_pages.py runs them."""
