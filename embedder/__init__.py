"""CQA-Face embedder: the model, face detection and alignment, inference and export."""
