"""Raw video to I3D snippet features (``python -m extract VIDEOS... --out DIR``).

>>> from extract import ExtractConfig, extract_videos
>>> report = extract_videos(["videos/"], "feats/", ExtractConfig(stride=4))
>>> from extract import read_features
>>> ff = read_features("feats/video.h5")      # ff.features (T, 1024), ff.times (T,)
>>> from extract import load_i3d
>>> model = load_i3d("rgb")                   # pretrained I3D; model.spec says the input it expects
"""

from extract.features import FeatureFile, FeatureFileError, read_features, snippet_times
from extract.i3d import I3D, I3DOutput
from extract.pipeline import ExtractConfig, ExtractionReport, extract_video, extract_videos
from extract.pretrained import load_i3d
from extract.snippets import SnippetPlan
from extract.video import VideoError, open_video

__all__ = ["I3D", "I3DOutput", "ExtractConfig", "ExtractionReport", "extract_video", "extract_videos",
           "FeatureFile", "FeatureFileError", "read_features", "snippet_times", "SnippetPlan",
           "VideoError", "open_video", "load_i3d"]
