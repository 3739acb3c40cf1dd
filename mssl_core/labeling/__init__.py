"""Labeling a batch: decode the user's files, choose image features, adapt a model to the task,
predict; on one machine or on a Ray cluster, with embeddings cached by content."""
