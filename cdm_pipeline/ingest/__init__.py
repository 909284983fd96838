"""Stage 1: land new files from the landing folder in ``raw.<source>``, each file exactly once."""
