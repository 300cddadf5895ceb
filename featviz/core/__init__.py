"""The optimization core: layer hooks, objectives, parameterizations, transforms, the render
loop, and image files. It imports nothing from the tiers above it (models, methods, face)."""
