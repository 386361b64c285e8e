"""The folder walk: video files and folders given on the command line -> the videos to extract."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from extract.video import VIDEO_EXTENSIONS

__all__ = ["collect_videos"]


def collect_videos(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], dict[Path, str]]:
    """Expand files and folders (recursively, by video extension) into a sorted video list.

    Returns:
        (videos, problems): inputs that are missing, and videos whose id (file name without
        extension) repeats an earlier one, are problems with a reason.
    """
    videos: list[Path] = []
    problems: dict[Path, str] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                problems[item] = "folder holds no video files (" + ", ".join(VIDEO_EXTENSIONS) + ")"
            videos.extend(found)
        elif item.is_file():
            videos.append(item)
        else:
            problems[item] = "no such file or folder"
    seen: dict[str, Path] = {}
    unique = []
    for path in videos:
        if path.stem in seen:
            problems[path] = f"video id {path.stem!r} repeats {seen[path.stem]}"
        else:
            seen[path.stem] = path
            unique.append(path)
    return unique, problems
