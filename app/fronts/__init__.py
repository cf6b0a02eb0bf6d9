"""The dialects clients speak: one module each, translating to the internal vocabulary and back."""
