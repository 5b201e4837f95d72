"""Practice 3: set up Mask R-CNN to be fine-tuned on a new set of classes.

As in PyTorch's object detection fine-tuning tutorial (the PennFudan pedestrians): take a Mask R-CNN
(ResNet-50 FPN) and replace its two predictors, the box predictor (class scores and box offsets per
class) and the mask predictor (one mask per class), by new ones for `num_classes` classes, the
background included. In the course the model comes with COCO weights (weights="DEFAULT"); here it is
built with no weights at all, so that it builds offline and fast: the structure is the same.
"""

import torch
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import masks_to_boxes

MASK_HIDDEN_CHANNELS = 256  # the tutorial's hidden layer of the new mask predictor


def build_maskrcnn(num_classes: int, **kwargs) -> MaskRCNN:
    """Mask R-CNN with its box and mask predictors replaced for `num_classes` (background included).

    kwargs go to `maskrcnn_resnet50_fpn` (min_size, max_size, box_detections_per_img, ...).
    """
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    in_features = None  # what the box head gives: 1024
    model.roi_heads.box_predictor = None  # scores, 4 offsets a class
    in_channels = None  # what the mask head gives: 256
    model.roi_heads.mask_predictor = None  # a mask a class
    return model


def instance_target(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training target of one image from its instance mask, as the tutorial's dataset builds it.

    mask: (H, W) integers, 0 for the background and k > 0 for the pixels of object k. Returns, for
    the K objects in increasing order of k: "boxes" (K, 4) float32 XYXY from `masks_to_boxes`,
    "labels" (K,) int64, all 1 (one class besides the background), "masks" (K, H, W) uint8 in {0, 1}.
    """
    ids = torch.unique(mask)
    ids = None  # 0 is the background, not an object
    masks = None  # (K, H, W): one binary mask per object
    return {
        "boxes": None,
        "labels": None,
        "masks": masks,
    }
