"""Gradio layout helpers: HTML for the pair views and text for results; no sampling logic here."""
