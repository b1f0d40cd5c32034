"""dreamflow: DeepDream for videos, image folders and single images."""

__version__ = "0.1.0"
