"""The identification system: gallery, search, and the command line."""
