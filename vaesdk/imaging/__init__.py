"""Layer 3, images and inputs: reading one image by the image policy, grids and PNG
(`images`); many inputs in batches, read ahead by threads, errors in place (`inputs`)."""
