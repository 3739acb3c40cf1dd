"""Measurements that print tables: cross-domain accuracy and calibration, speed, and the
simulated reviewer of the review loop."""
