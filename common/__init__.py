"""Small helpers shared by the packages: atomic files, hashing, the cache folder."""

from common.fileio import atomic_path, cache_dir, sha256_file

__all__ = ["atomic_path", "cache_dir", "sha256_file"]
