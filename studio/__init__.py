"""Portrait Studio's Gradio UI. It never imports torch: the Engine object is passed in."""

from studio.layout import build_ui, launch_options

__all__ = ["build_ui", "launch_options"]
