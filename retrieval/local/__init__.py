"""Local features of the backbone: BoW index, localisation."""
