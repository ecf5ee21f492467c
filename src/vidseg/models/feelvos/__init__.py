from vidseg.models.feelvos.model import FEELVOS, DynamicSegmentationHead, EmbeddingHead

__all__ = ["FEELVOS", "DynamicSegmentationHead", "EmbeddingHead"]
