"""Tokens → image tokens → pixels on the devices at hand: device detection, the mesh, the compiled
sampling loop, and the Pipeline whose `stream` yields progress and finished images."""
