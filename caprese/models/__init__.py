"""Model loading (hub id, local folder or built-in name) and the built-in models."""
