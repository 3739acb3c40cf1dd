"""Offline corpora (rendered characters, real digits and clothing) and the episode sampler."""
