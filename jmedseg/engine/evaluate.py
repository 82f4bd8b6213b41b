"""Evaluate a model on a dataset split: whole images at native resolution, inside the FOV."""
from tqdm import tqdm

from ..metrics import SegmentationEvaluator
from .inference import predict_probs

__all__ = ["evaluate"]


def evaluate(model, dataset, num_classes, threshold=0.5, use_fov=True, distances=True,
             tile_size=None, tile_overlap=0.5, tta=False, progress=False, desc="eval"):
    """Run inference on every labelled sample and return the evaluator's summary dict."""
    binary = num_classes <= 2
    evaluator = SegmentationEvaluator(num_classes=max(2, num_classes), threshold=threshold,
                                      compute_distances=distances)
    for sample in tqdm(dataset, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        probs = predict_probs(model, sample.image, tile_size=tile_size, overlap=tile_overlap, tta=tta)
        fov = sample.fov if use_fov else None
        evaluator.add(probs[-1] if binary else probs, sample.mask, fov=fov, name=sample.name)
    return evaluator.summary()
