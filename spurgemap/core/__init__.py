"""What every layer shares: errors, progress, staged output folders, hashing, safe ids."""
