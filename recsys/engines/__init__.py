"""Distributed engines for the heavy stages: Ray (images, neighbour table), Spark (events, ALS)."""
