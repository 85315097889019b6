"""Renderers: pure functions from the report model to text or bytes, one module per format."""
