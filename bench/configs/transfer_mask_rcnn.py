# bench/detection_transfer.py's instance segmentation model: the tests' tiny Mask R-CNN at half width
# (ResNet-18 layout), 64-channel FPN and heads, two mask convs, for 96 px images.
_base_ = "../../plugins/vision/tests/configs/tiny_mask_rcnn.py"
model = dict(
    backbone=dict(base_channels=32), neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=64), bbox_head=dict(in_channels=64, fc_out_channels=256),
                  mask_roi_extractor=dict(out_channels=64), mask_head=dict(num_convs=2, in_channels=64,
                                                                           conv_out_channels=64)))
