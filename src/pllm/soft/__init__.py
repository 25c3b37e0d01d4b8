"""Soft-prompt personalization (PPlug-style): a trained user encoder turns a user's history into a few
input vectors the frozen generator reads (`model`), trained on the training users' questions through the
pipeline's own prompts (`train`). A method above the pipeline, like `adapt` and `align`."""
