"""Datasets: scanning the photos and their layout, reading images, class maps, masks, fetch."""
